#!/usr/bin/env python3
"""Word timing at speaker-turn edges, faster-whisper and colloquy side by side.

For each reference turn of an RTTM file: the distance (seconds) from the
turn's start to the nearest word start of the transcript, and from its end to
the nearest word end; per file the median of each over the turns, and over
all turns pooled. The same measure as `colloquy eval`'s "start s" / "end s"
columns.

- faster-whisper: `WhisperModel(ct2 dir, device="cpu", compute_type=float32,
  cpu_threads=2).transcribe(file, beam_size=1, language="en",
  word_timestamps=True)`, on the same CTranslate2 tiny.en weights colloquy
  converts (installed and located by benches/faster_whisper_env.py);
- colloquy: `target/release/colloquy transcribe --format json --num-speakers N
  FILE` (N: the RTTM's speakers), words from `segments[].words`. A result
  without words (a build before word timestamps) is reported as such, with
  no numbers.

    python3 benches/word_timing.py                    # conv1 and realmix1 from ../shared/data
    python3 benches/word_timing.py --only faster-whisper
    python3 benches/word_timing.py --pair a.wav a.rttm --pair b.flac b.rttm

Prints a table and writes target/bench/word_timing.json.
"""
import argparse
import json
import os
import statistics
import subprocess
from pathlib import Path

from faster_whisper_env import REPO, SHARED_DATA, ensure_ct2_dir, ensure_fw_venv, log, write_report

DEFAULT_PAIRS = [
    (SHARED_DATA / "synthetic" / "conv1.wav", SHARED_DATA / "synthetic" / "conv1.rttm"),
    (SHARED_DATA / "mix" / "realmix1.wav", SHARED_DATA / "mix" / "realmix1.rttm"),
]

# run in the faster-whisper venv: one JSON line per file, its words' (start, end, word)
FW_SCRIPT = r"""
import json, sys
from faster_whisper import WhisperModel
model_dir, compute_type, files = sys.argv[1], sys.argv[2], sys.argv[3:]
model = WhisperModel(model_dir, device="cpu", compute_type=compute_type, cpu_threads=2)
for f in files:
    segments, info = model.transcribe(f, beam_size=1, language="en", word_timestamps=True)
    words = [[w.start, w.end, w.word] for s in segments for w in (s.words or [])]
    print(json.dumps({"file": f, "words": words}), flush=True)
"""


def read_rttm(path):
    """(start, end) seconds of every turn, in file order, and the number of speakers."""
    turns, speakers = [], set()
    for line in Path(path).read_text().splitlines():
        f = line.split()
        if len(f) >= 8 and f[0] == "SPEAKER":
            start, dur = float(f[3]), float(f[4])
            turns.append((start, start + dur))
            speakers.add(f[7])
    return turns, len(speakers)


def edge_distances(turns, words):
    """Per turn: |turn start - nearest word start| and |turn end - nearest word end|; None without words."""
    if not words or not turns:
        return None
    return {
        "start_seconds": [min(abs(w[0] - s) for w in words) for s, _ in turns],
        "end_seconds": [min(abs(w[1] - e) for w in words) for _, e in turns],
    }


def summary(distances):
    """Medians over the turns of one file, or of several pooled (a list of edge_distances results)."""
    starts = [v for d in distances for v in d["start_seconds"]]
    ends = [v for d in distances for v in d["end_seconds"]]
    if not starts:
        return None
    return {"turns": len(starts), "median_start_seconds": statistics.median(starts),
            "median_end_seconds": statistics.median(ends)}


def colloquy_words(result):
    """(start, end, word) of every word in `segments[].words` of a colloquy result."""
    return [(w["start"], w["end"], w.get("word", "")) for s in result.get("segments") or []
            for w in s.get("words") or [] if w.get("start") is not None and w.get("end") is not None]


def run_faster_whisper(files, model, compute_type):
    py = ensure_fw_venv()
    ct2 = ensure_ct2_dir(model)
    p = subprocess.run([str(py), "-c", FW_SCRIPT, str(ct2), compute_type, *map(str, files)], capture_output=True,
                       text=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
    if p.returncode != 0:
        raise SystemExit(f"faster-whisper failed:\n{p.stderr[-3000:]}")
    return {v["file"]: v["words"] for v in map(json.loads, p.stdout.splitlines())}


def run_colloquy(binary, path, num_speakers, model, precision):
    """The words of colloquy's result for one file, or (None, why not)."""
    if not Path(binary).exists():
        return None, f"{binary} not found (cargo build --release)"
    cmd = [binary, "transcribe", "--format", "json", "--num-speakers", str(num_speakers), "--model", model,
           "--precision", precision, str(path)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        return None, f"colloquy transcribe failed (exit {p.returncode}): {p.stderr.strip()[-500:]}"
    lines = [line for line in p.stdout.splitlines() if line.strip()]
    try:
        result = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError) as e:
        return None, f"colloquy transcribe printed no result JSON ({e})"
    words = colloquy_words(result)
    if not words:
        return None, "no words in colloquy's result (segments[].words absent or empty: word timestamps not in this build)"
    return words, None


def fmt(v):
    return "-" if v is None else f"{v:.2f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair", nargs=2, action="append", metavar=("AUDIO", "RTTM"),
                    help="audio file and its RTTM reference; repeatable (default: conv1 and realmix1 of ../shared/data)")
    ap.add_argument("--model", default="tiny.en")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "int8"])
    ap.add_argument("--only", choices=["faster-whisper", "colloquy"], help="measure one side only")
    ap.add_argument("--colloquy", default=str(REPO / "target" / "release" / "colloquy"))
    ap.add_argument("--json", default=str(REPO / "target" / "bench" / "word_timing.json"))
    args = ap.parse_args()

    pairs = [(Path(a), Path(r)) for a, r in args.pair] if args.pair else DEFAULT_PAIRS
    for a, r in pairs:
        for p in (a, r):
            if not p.exists():
                raise SystemExit(f"{p} not found: this benchmark needs the shared speech data beside the checkout"
                                 if not args.pair else f"{p} not found")
    refs = {a: read_rttm(r) for a, r in pairs}
    compute_type = {"fp32": "float32", "int8": "int8"}[args.precision]
    sides = [s for s in ("faster-whisper", "colloquy") if args.only in (None, s)]

    fw_words = {}
    if "faster-whisper" in sides:
        log(f"faster-whisper ({args.model} {compute_type}, greedy, word_timestamps=True) on {len(pairs)} file(s)")
        fw_words = run_faster_whisper([a for a, _ in pairs], args.model, compute_type)

    files = []
    for audio, rttm in pairs:
        turns, n_speakers = refs[audio]
        entry = {"id": audio.stem, "audio": str(audio), "rttm": str(rttm), "turns": len(turns),
                 "num_speakers": n_speakers}
        if "faster-whisper" in sides:
            words = fw_words.get(str(audio)) or []
            d = edge_distances(turns, words)
            entry["faster_whisper"] = {"words": len(words), **(summary([d]) or {}), "distances": d}
            if d is None:
                entry["faster_whisper"]["error"] = "no words in faster-whisper's transcript"
        if "colloquy" in sides:
            log(f"colloquy transcribe --num-speakers {n_speakers} {audio}")
            words, why = run_colloquy(args.colloquy, audio, n_speakers, args.model, args.precision)
            if words is None:
                entry["colloquy"] = {"words": 0, "error": why}
            else:
                d = edge_distances(turns, words)
                entry["colloquy"] = {"words": len(words), **(summary([d]) or {}), "distances": d}
        files.append(entry)

    totals = {}
    for key in ("faster_whisper", "colloquy"):
        ds = [f[key]["distances"] for f in files if f.get(key, {}).get("distances")]
        if ds:
            totals[key] = summary(ds)

    print(f"\n## Word timing at turn edges: {args.model} {args.precision}, greedy; median seconds from each "
          f"reference turn's start (end) to the nearest word start (end)\n")
    print("| file | turns | faster-whisper start | faster-whisper end | colloquy start | colloquy end |")
    print("|---|---|---|---|---|---|")
    notes = []
    rows = [(f["id"], f["turns"], f.get("faster_whisper"), f.get("colloquy")) for f in files]
    rows.append(("**all turns**", sum(f["turns"] for f in files), totals.get("faster_whisper"), totals.get("colloquy")))
    for name, n, fw, co in rows:
        cells = []
        for label, side in (("faster-whisper", fw), ("colloquy", co)):
            if side and side.get("error"):
                notes.append(f"{name}, {label}: {side['error']}")
            cells += [fmt((side or {}).get("median_start_seconds")), fmt((side or {}).get("median_end_seconds"))]
        print(f"| {name} | {n} | " + " | ".join(cells) + " |")
    for n in notes:
        print(f"\n{n}", end="")
    print()
    report = {"model": args.model, "precision": args.precision, "decoding": "greedy", "cpu_threads": 2,
              "measure": "per reference turn: |turn start - nearest word start|, |turn end - nearest word end| (s); "
                         "medians over turns",
              "files": files, "totals": totals}
    out = Path(args.json)
    write_report(out, report)


if __name__ == "__main__":
    main()
