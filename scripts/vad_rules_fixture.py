#!/usr/bin/env python3
"""Writes tests/data/vad_rules_fixture.json: speech regions that silero's own
`get_speech_timestamps_from_probs` (silero-vad 6.2.3) finds in random
per-frame probability sequences, for the parity test in src/vad.rs.

The function is read out of the wheel's utils_vad.py and run without torch
(it needs none). Usage:

    python3 scripts/vad_rules_fixture.py [--wheel ~/.cache/colloquy/downloads/silero_vad-6.2.3-py3-none-any.whl]
"""

import argparse
import ast
import json
import os
import random
import zipfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.get("COLLOQUY_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "colloquy")


def load_rules(wheel):
    with zipfile.ZipFile(wheel) as z:
        source = z.read("silero_vad/utils_vad.py").decode()
    tree = ast.parse(source)
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "get_speech_timestamps_from_probs")
    scope = {"List": list}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), "utils_vad.py", "exec"), scope)
    return scope["get_speech_timestamps_from_probs"]


def q(x):
    """On a grid of 1/256 (exact in f32 and f64; some fall exactly on 0.5)."""
    return round(x * 256) / 256


def probabilities(rng, frames):
    """Runs of speech-like and silence-like frames with jitter, so that every
    rule (threshold, neg_threshold, pauses of all lengths) is exercised."""
    out = []
    speech = rng.random() < 0.5
    while len(out) < frames:
        run = rng.choice([1, 2, 3, 4, 5, 6, 8, 12, 20, 40, 80, 200])
        lo, hi = (0.3, 1.0) if speech else (0.0, 0.55)
        out.extend(q(rng.uniform(lo, hi)) for _ in range(run))
        speech = not speech
    return out[:frames]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheel", default=os.path.join(CACHE, "downloads", "silero_vad-6.2.3-py3-none-any.whl"))
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "data", "vad_rules_fixture.json"))
    ap.add_argument("--cases", type=int, default=50)
    args = ap.parse_args()
    rules = load_rules(args.wheel)
    rng = random.Random(10)
    cases = []
    for i in range(args.cases):
        frames = rng.choice([0, 1, 5, 50, 300, 1000, 2000])
        probs = probabilities(rng, frames)
        num_samples = max(0, frames * 512 - rng.choice([0, 0, 1, 100, 511])) if frames else 0
        params = {
            "threshold": rng.choice([0.5, 0.5, 0.3, 0.6]),
            "min_speech_ms": rng.choice([0, 100, 250]),
            "min_silence_ms": rng.choice([0, 100, 300, 2000]),
            "speech_pad_ms": rng.choice([0, 30, 200, 400]),
            "max_speech_s": rng.choice([0.0, 0.0, 1.0, 3.0, 10.0]),
        }
        spans = rules(
            probs,
            sampling_rate=16000,
            threshold=params["threshold"],
            min_speech_duration_ms=params["min_speech_ms"],
            max_speech_duration_s=params["max_speech_s"] or float("inf"),
            min_silence_duration_ms=params["min_silence_ms"],
            speech_pad_ms=params["speech_pad_ms"],
            audio_length_samples=num_samples,
        )
        cases.append({**params, "num_samples": num_samples, "probs": probs,
                      "spans": [[s["start"], s["end"]] for s in spans]})
    with open(args.out, "w") as f:
        json.dump({"source": os.path.basename(args.wheel), "cases": cases}, f, separators=(",", ":"))
    print(f"{args.out}: {len(cases)} cases, {sum(len(c['spans']) for c in cases)} regions")


if __name__ == "__main__":
    main()
