#!/usr/bin/env python3
"""Colloquy's Whisper against faster-whisper on the same weights, clips and
machine, side by side in one run.

For each clip of the manifest group it measures wall seconds (file decoding
included, model loading excluded; minimum over --runs, the two engines
alternating run by run), speed (audio seconds / wall seconds), corpus WER
(case, punctuation and numbers normalised, the same normaliser for both) and
the peak RSS of each engine's process; then the whole colloquy pipeline
(`colloquy eval`: decoding, Whisper, diarization, alignment), one job at a
time with the default settings and all clips at once with the throughput
settings, on the same clips against faster-whisper's transcription alone.

    python3 benches/whisper_vs_faster_whisper.py                # tiny.en fp32 and int8
    python3 benches/whisper_vs_faster_whisper.py --precisions fp32 --runs 5

faster-whisper is installed into $COLLOQUY_CACHE/v1/venv-bench when missing;
the CTranslate2 model directories come from the same registry packages
`make setup` converts (both: benches/faster_whisper_env.py).
"""
import argparse
import json
import os
import re
import subprocess
import time
from pathlib import Path

from faster_whisper_env import REPO, ensure_ct2_dir, ensure_fw_venv, log, write_report

# colloquy without word timestamps and speech detection (to measure what they cost).
PLAIN_ENV = {"COLLOQUY__WHISPER__WORD_TIMESTAMPS": "false", "COLLOQUY__VAD__ENABLED": "false"}
# colloquy's settings for many files at once on a small CPU (README: "Throughput").
THROUGHPUT_ENV = {"COLLOQUY__PIPELINE__TRANSCRIBER__THREADS": "2"}

FW_SCRIPT = r"""
import json, sys, time
from faster_whisper import WhisperModel
model_dir, compute_type, runs, files = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
model = WhisperModel(model_dir, device="cpu", compute_type=compute_type, cpu_threads=2)
for run in range(runs):
    for f in files:
        t0 = time.perf_counter()
        segments, info = model.transcribe(f, beam_size=1, language="en")
        text = "".join(s.text for s in segments)
        print(json.dumps({"run": run, "file": f, "seconds": time.perf_counter() - t0, "text": text.strip()}), flush=True)
"""


ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n):
    def below_1000(n):
        out = []
        if n >= 100:
            out += [ONES[n // 100], "hundred"]
        r = n % 100
        if r >= 20:
            out.append(TENS[r // 10])
            if r % 10:
                out.append(ONES[r % 10])
        elif r or n == 0:
            out.append(ONES[r])
        return out
    if n >= 1000:
        return below_1000(n // 1000) + ["thousand"] + (below_1000(n % 1000) if n % 1000 else [])
    return below_1000(n)


def normalize(text):
    """The normaliser of src/text.rs: lower case, % -> percent, numbers and mr/mrs/dr spelled out, punctuation dropped."""
    text = text.replace("%", " percent ").replace("\u2019", "'")
    text = re.sub(r"[-\u2013\u2014/]", " ", text).lower()
    words = []
    for raw in text.split():
        w = "".join(c for c in raw if c.isalnum() or c == "'").strip("'")
        if not w:
            continue
        if w.isdigit() and int(w) < 1_000_000:
            words += number_words(int(w))
        else:
            words.append({"mr": "mister", "mrs": "missus", "dr": "doctor"}.get(w, w))
    return words


def edit_distance(r, h):
    prev = list(range(len(h) + 1))
    for i in range(1, len(r) + 1):
        cur = [i] + [0] * len(h)
        for j in range(1, len(h) + 1):
            cur[j] = min(prev[j - 1] + (r[i - 1] != h[j - 1]), prev[j] + 1, cur[j - 1] + 1)
        prev = cur
    return prev[len(h)]


def peak_rss_of(cmd, env=None):
    """Runs cmd under a reaper that reports its peak RSS (MB)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    out = p.stdout.read()
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    if status != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} ... failed:\n{err[-3000:]}")
    return out.splitlines(), usage.ru_maxrss / 1024, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", default=str(REPO.parent / "shared" / "data" / "asr_manifest.tsv"))
    ap.add_argument("--group", default="single")
    ap.add_argument("--model", default="tiny.en")
    ap.add_argument("--precisions", default="fp32,int8")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--colloquy", default=str(REPO / "target" / "release" / "colloquy"))
    ap.add_argument("--json", default=str(REPO / "target" / "bench" / "whisper_vs_faster_whisper.json"))
    args = ap.parse_args()

    manifest = Path(args.manifest)
    if not manifest.exists():
        raise SystemExit(f"{manifest} not found: this benchmark needs the shared speech data beside the checkout")
    rows = []
    with open(manifest) as f:
        header = f.readline().rstrip("\n").split("\t")
        for line in f:
            r = dict(zip(header, line.rstrip("\n").split("\t")))
            if r["group"] == args.group:
                r["abs"] = str(manifest.parent / r["path"])
                rows.append(r)
    files = [r["abs"] for r in rows]
    fw_py = ensure_fw_venv()
    ct2 = ensure_ct2_dir(args.model)
    report = {"model": args.model, "clips": len(rows), "audio_seconds": sum(float(r["duration_s"]) for r in rows),
              "runs": args.runs, "results": {}}
    for precision in args.precisions.split(","):
        compute_type = {"fp32": "float32", "int8": "int8"}[precision]
        ours = {f: [] for f in files}
        plain = {f: [] for f in files}
        theirs = {f: [] for f in files}
        pipe = {f: [] for f in files}
        at_once = []
        texts = {"colloquy": {}, "faster-whisper": {}}
        rss = {"colloquy": 0.0, "faster-whisper": 0.0}
        for run in range(args.runs):
            lines, peak, _ = peak_rss_of([args.colloquy, "transcribe", "--whisper-only", "--format", "json", "--model", args.model,
                                          "--precision", precision, *files])
            rss["colloquy"] = max(rss["colloquy"], peak)
            for line in lines:
                v = json.loads(line)
                ours[v["file"]].append(v["performance_metrics"]["total_seconds"])
                texts["colloquy"][v["file"]] = v["full_text"]
            # the same without word timestamps and speech detection: what they cost
            lines, _, _ = peak_rss_of([args.colloquy, "transcribe", "--whisper-only", "--format", "json", "--model", args.model,
                                       "--precision", precision, *files], env={**os.environ, **PLAIN_ENV})
            for line in lines:
                v = json.loads(line)
                plain[v["file"]].append(v["performance_metrics"]["total_seconds"])
                texts.setdefault("plain", {})[v["file"]] = v["full_text"]
            lines, peak, _ = peak_rss_of([str(fw_py), "-c", FW_SCRIPT, str(ct2), compute_type, "1", *files],
                                         env={**os.environ, "OMP_NUM_THREADS": "2"})
            rss["faster-whisper"] = max(rss["faster-whisper"], peak)
            for line in lines:
                v = json.loads(line)
                theirs[v["file"]].append(v["seconds"])
                texts["faster-whisper"][v["file"]] = v["text"]
            # the whole pipeline (decode -> preprocess -> Whisper -> diarization -> align), one job at a time
            report_path = Path(args.json).with_name(f"eval-{precision}.json")
            report_path.parent.mkdir(parents=True, exist_ok=True)
            _, peak, _ = peak_rss_of([args.colloquy, "eval", "--manifest", str(manifest), "--group", args.group,
                                      "--model", args.model, "--precision", precision, "--report", str(report_path)])
            rss["pipeline"] = max(rss.get("pipeline", 0.0), peak)
            for v in json.loads(report_path.read_text())["files"]:
                pipe[v["file"]].append(v["wall_seconds"])
            # the same, all clips submitted at once with the throughput settings (one ONNX Runtime
            # thread per model, two Whisper and two diarization engines, four jobs in the pipeline)
            _, peak, _ = peak_rss_of([args.colloquy, "eval", "--manifest", str(manifest), "--group", args.group,
                                      "--model", args.model, "--precision", precision, "--jobs", "4",
                                      "--report", str(report_path)], env={**os.environ, **THROUGHPUT_ENV})
            rss["pipeline_at_once"] = max(rss.get("pipeline_at_once", 0.0), peak)
            at_once.append(json.loads(report_path.read_text())["totals"]["wall_seconds"])
            log(f"{precision}: run {run + 1}/{args.runs} done")
        print(f"\n## {args.model} {precision} greedy, {len(rows)} clips, min of {args.runs} runs\n")
        print("| clip | audio s | colloquy s (speed) | faster-whisper s (speed) | WER colloquy | WER faster-whisper |")
        print("|---|---|---|---|---|---|")
        tot = {"a": 0.0, "o": 0.0, "t": 0.0, "eo": 0, "et": 0, "n": 0}
        per_clip = []
        for r in rows:
            f = r["abs"]
            dur = float(r["duration_s"])
            o, t = min(ours[f]), min(theirs[f])
            ref = normalize(r["reference"])
            eo = edit_distance(ref, normalize(texts["colloquy"][f]))
            et = edit_distance(ref, normalize(texts["faster-whisper"][f]))
            tot["a"] += dur; tot["o"] += o; tot["t"] += t; tot["eo"] += eo; tot["et"] += et; tot["n"] += len(ref)
            print(f"| {r['id']} | {dur:.2f} | {o:.3f} (x{dur / o:.1f}) | {t:.3f} (x{dur / t:.1f}) | "
                  f"{100 * eo / len(ref):.0f}% | {100 * et / len(ref):.0f}% |")
            per_clip.append({"id": r["id"], "audio_s": dur, "colloquy_s": o, "faster_whisper_s": t,
                             "colloquy_text": texts["colloquy"][f], "faster_whisper_text": texts["faster-whisper"][f],
                             "colloquy_errors": eo, "faster_whisper_errors": et, "reference_words": len(ref)})
        so, st = tot["a"] / tot["o"], tot["a"] / tot["t"]
        summary = {"colloquy_speed": so, "faster_whisper_speed": st, "speed_ratio": so / st,
                   "colloquy_wer": tot["eo"] / tot["n"], "faster_whisper_wer": tot["et"] / tot["n"],
                   "colloquy_peak_rss_mb": rss["colloquy"], "faster_whisper_peak_rss_mb": rss["faster-whisper"]}
        print(f"| **total** | {tot['a']:.1f} | {tot['o']:.2f} (x{so:.1f}) | {tot['t']:.2f} (x{st:.1f}) | "
              f"{100 * summary['colloquy_wer']:.1f}% | {100 * summary['faster_whisper_wer']:.1f}% |")
        tplain = sum(min(plain[r["abs"]]) for r in rows)
        plain_errors = sum(edit_distance(normalize(r["reference"]), normalize(texts["plain"][r["abs"]])) for r in rows)
        summary.update({"plain_seconds": tplain, "words_and_vad_cost": tot["o"] / tplain,
                        "plain_wer": plain_errors / tot["n"]})
        print(f"word timestamps + speech detection: {tot['o']:.2f} s against {tplain:.2f} s without "
              f"({summary['words_and_vad_cost']:.3f}x the time; WER {100 * summary['colloquy_wer']:.1f}% with, "
              f"{100 * summary['plain_wer']:.1f}% without)")
        print(f"\nspeed ratio colloquy / faster-whisper: {summary['speed_ratio']:.2f}x; "
              f"peak RSS colloquy {rss['colloquy']:.0f} MB, faster-whisper {rss['faster-whisper']:.0f} MB")
        tp = sum(min(pipe[r["abs"]]) for r in rows)
        summary.update({"pipeline_seconds": tp, "pipeline_speed": tot["a"] / tp, "pipeline_peak_rss_mb": rss["pipeline"],
                        "pipeline_vs_faster_whisper": (tot["a"] / tp) / st})
        print(f"whole pipeline (decoding to alignment, diarization included, one job at a time): {tp:.2f} s "
              f"(x{tot['a'] / tp:.1f}) against faster-whisper's transcription alone {tot['t']:.2f} s (x{st:.1f}): "
              f"{summary['pipeline_vs_faster_whisper']:.2f}x; peak RSS {rss['pipeline']:.0f} MB")
        ta = min(at_once)
        summary.update({"pipeline_at_once_seconds": ta, "pipeline_at_once_speed": tot["a"] / ta,
                        "pipeline_at_once_peak_rss_mb": rss["pipeline_at_once"],
                        "pipeline_at_once_vs_faster_whisper": (tot["a"] / ta) / st})
        print(f"whole pipeline, all clips at once (throughput settings: {' '.join(f'{k}={v}' for k, v in THROUGHPUT_ENV.items())}, "
              f"--jobs 4): {ta:.2f} s (x{tot['a'] / ta:.1f}): {summary['pipeline_at_once_vs_faster_whisper']:.2f}x "
              f"faster-whisper's transcription; peak RSS {rss['pipeline_at_once']:.0f} MB")
        report["results"][precision] = {"summary": summary, "clips": per_clip}
    write_report(args.json, report)


if __name__ == "__main__":
    main()
