#!/usr/bin/env python3
"""Known speakers (#14): how alike the diarizer's voice prints of the same
person are across recordings, and how alike those of different people are;
the false-accept and false-reject rates of each threshold.

Each recording of ../shared/data is diarized by `colloquy diarize --format
json` (which prints one voice print per speaker: the mean unit CAM++
embedding of its cluster). A print is given the reference speaker it
overlaps most (AMI excerpts, realmix1: from their RTTM; single-speaker
clips: the person named below). Every pair of prints from two different
recordings is scored by cosine: same person or not. AMI speakers recur
across excerpts (MEE009, MEE012 in dev00 and dev01; FEO070, FEO072, MEE071,
MEE073 in tst00 and tst01); the LibriVox reader recurs in five clips and in
realmix1.

    python3 benches/speakers.py [--threshold T]

prints the AMI matrix, the pairs by kind and the rates per threshold.
"""

import argparse
import itertools
import json
import math
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("COLLOQUY_BIN", os.path.join(ROOT, "target", "release", "colloquy"))
DATA = os.path.join(ROOT, "..", "shared", "data")

# recording -> (path, speaker count hint, rttm or the one person in it)
MULTI = {
    "ami_dev00": ("diarization/ami_dev00.wav", 2, "diarization/ami.rttm"),
    "ami_dev01": ("diarization/ami_dev01.wav", 2, "diarization/ami.rttm"),
    "ami_tst00": ("diarization/ami_tst00.wav", 4, "diarization/ami.rttm"),
    "ami_tst01": ("diarization/ami_tst01.wav", 4, "diarization/ami.rttm"),
    "realmix1": ("mix/realmix1.wav", 6, "mix/realmix1.rttm"),
}
SINGLE = {
    "whisper_jfk": ("asr/whisper_jfk.flac", "jfk"),
    "librivox_ss01_0870": ("asr/librivox_ss01_0870.wav", "reader"),
    "librivox_ss01_0880": ("asr/librivox_ss01_0880.wav", "reader"),
    "librivox_ss01_0890": ("asr/librivox_ss01_0890.wav", "reader"),
    "librivox_ss01_0920": ("asr/librivox_ss01_0920.wav", "reader"),
    "librivox_ss01_0930": ("asr/librivox_ss01_0930.wav", "reader"),
    "deepspeech_LDC93S1": ("asr/deepspeech_LDC93S1.wav", "timit"),
    "deepspeech_new_home_in_the_stars": ("asr/deepspeech_new_home_in_the_stars.wav", "stars"),
    "deepspeech_arctic_a0024": ("asr/deepspeech_arctic_a0024.wav", "arctic"),
    "picovoice_leopard_test": ("asr/picovoice_leopard_test.wav", "quilter"),
    "speechbrain_LJ050-0131": ("asr/speechbrain_LJ050-0131.wav", "lj"),
    "azure_customspeech_test_audio": ("asr/azure_customspeech_test_audio.wav", "azure"),
    "azure_customspeech_train_audio1": ("asr/azure_customspeech_train_audio1.wav", "azure"),
}


def rttm(path, rec):
    turns = []
    for line in open(path):
        f = line.split()
        if len(f) >= 8 and f[0] == "SPEAKER" and f[1] == rec:
            turns.append((f[7], float(f[3]), float(f[3]) + float(f[4])))
    return turns


def diarize(path, hint):
    out = subprocess.run([BIN, "diarize", "--format", "json", "--num-speakers", str(hint), path],
                         capture_output=True, text=True, check=True, env={**os.environ, "COLLOQUY_LOG": "warn"})
    return json.loads(out.stdout)


def overlap(a0, a1, b0, b1):
    return max(0.0, min(a1, b1) - max(a0, b0))


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0


def prints():
    """[(recording, label, person, seconds the person speaks there, embedding)]"""
    out = []
    for rec, (rel, hint, ref) in MULTI.items():
        d = diarize(os.path.join(DATA, rel), hint)
        ref_turns = rttm(os.path.join(DATA, ref), rec)
        for v in d["voices"]:
            mine = [(t["start"], t["end"]) for t in d["turns"] if t["speaker"] == v["speaker"]]
            by_person = {}
            for person, s, e in ref_turns:
                by_person[person] = by_person.get(person, 0.0) + sum(overlap(s, e, a, b) for a, b in mine)
            person = max(by_person, key=by_person.get) if by_person else "?"
            spoken = sum(e - s for p, s, e in ref_turns if p == person)
            out.append((rec, v["speaker"], person, spoken, v["embedding"]))
    for rec, (rel, person) in SINGLE.items():
        d = diarize(os.path.join(DATA, rel), 1)
        for v in d["voices"][:1]:
            out.append((rec, v["speaker"], person, d["duration"], v["embedding"]))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threshold", type=float, default=None, help="report this threshold's rates too")
    args = ap.parse_args()
    if not os.path.isdir(DATA):
        sys.exit("speakers: ../shared/data is missing")
    ps = prints()
    same, diff = [], []
    for a, b in itertools.combinations(ps, 2):
        if a[0] == b[0]:
            continue  # within one recording the clustering already decided
        c = cosine(a[4], b[4])
        (same if a[2] == b[2] else diff).append((c, a, b))
    print("AMI prints: cosine across excerpts (rows dev00/tst00, columns dev01/tst01)")
    for left, right in [("ami_dev00", "ami_dev01"), ("ami_tst00", "ami_tst01")]:
        rows = [p for p in ps if p[0] == left]
        cols = [p for p in ps if p[0] == right]
        print(f"  {left} \\ {right}: " + "  ".join(f"{c[1]}={c[2]}({c[3]:.1f}s)" for c in cols))
        for r in rows:
            print(f"    {r[1]}={r[2]}({r[3]:.1f}s): " + "  ".join(f"{cosine(r[4], c[4]):+.2f}" for c in cols))
    print(f"same person, different recordings: {len(same)} pairs; min {min(s[0] for s in same):.3f}, "
          f"median {sorted(s[0] for s in same)[len(same) // 2]:.3f}")
    print(f"different people: {len(diff)} pairs; max {max(d[0] for d in diff):.3f}, "
          f"median {sorted(d[0] for d in diff)[len(diff) // 2]:.3f}")
    worst_same = sorted(same, key=lambda s: s[0])[:5]
    worst_diff = sorted(diff, key=lambda d: -d[0])[:5]
    for c, a, b in worst_same:
        print(f"  lowest same   {c:+.3f}  {a[0]}:{a[1]}={a[2]} ({a[3]:.1f}s)  {b[0]}:{b[1]}={b[2]} ({b[3]:.1f}s)")
    for c, a, b in worst_diff:
        print(f"  highest diff  {c:+.3f}  {a[0]}:{a[1]}={a[2]}  {b[0]}:{b[1]}={b[2]}")
    print("threshold  false-accept  false-reject   (pairs of prints from different recordings)")
    ts = [round(0.2 + 0.05 * i, 2) for i in range(13)]
    if args.threshold is not None:
        ts = sorted(set(ts + [args.threshold]))
    for t in ts:
        fa = sum(d[0] >= t for d in diff) / len(diff)
        fr = sum(s[0] < t for s in same) / len(same)
        mark = "  <-" if args.threshold == t else ""
        print(f"  {t:.2f}      {fa:6.1%}        {fr:6.1%}{mark}")


if __name__ == "__main__":
    main()
