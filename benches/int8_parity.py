#!/usr/bin/env python3
"""int8 against fp32 (issue #11): word error rate of colloquy's Whisper at
each precision, on every installed model, side by side with faster-whisper
on the same weights at the same precisions, on three sets:

  clips     the 14 single-speaker clips of the shared manifest, one by one
            (corpus WER);
  realmix1  real voices taking turns (reference: its STM's words in order);
  conv1     a synthetic two-person call (reference: the manifest's text).

colloquy runs `transcribe --whisper-only` with its default settings
(batched, VAD, word timestamps); faster-whisper its sequential
`transcribe`, greedy, language "en". Accuracy only: no timings here
(make long-bench and benches/whisper_vs_faster_whisper.py time them).

    python3 benches/int8_parity.py [--models tiny.en,base] [--precisions fp32,int8]
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from faster_whisper_env import REPO, SHARED_DATA, ensure_ct2_dir, ensure_fw_venv, log, write_report  # noqa: E402
from whisper_vs_faster_whisper import edit_distance, normalize  # noqa: E402

FW_SCRIPT = r"""
import json, sys
from faster_whisper import WhisperModel
model_dir, compute_type, files = sys.argv[1], sys.argv[2], sys.argv[3:]
model = WhisperModel(model_dir, device="cpu", compute_type=compute_type, cpu_threads=2)
for f in files:
    segments, info = model.transcribe(f, beam_size=1, language="en")
    print(json.dumps({"file": f, "text": "".join(s.text for s in segments).strip()}), flush=True)
"""


def sets():
    """{set name: [(audio path, reference words)]} from ../shared/data."""
    manifest = SHARED_DATA / "asr_manifest.tsv"
    out = {"clips": [], "realmix1": [], "conv1": []}
    with open(manifest) as f:
        header = f.readline().rstrip("\n").split("\t")
        for line in f:
            r = dict(zip(header, line.rstrip("\n").split("\t")))
            if r["group"] == "single":
                out["clips"].append((str(SHARED_DATA / r["path"]), normalize(r["reference"])))
            elif r["id"] == "synthetic_conv1":
                out["conv1"].append((str(SHARED_DATA / r["path"]), normalize(r["reference"])))
    turns = []
    for line in (SHARED_DATA / "mix" / "realmix1.stm").read_text().splitlines():
        p = line.split(maxsplit=5)
        if len(p) == 6:
            turns.append((float(p[3]), p[5]))
    out["realmix1"].append((str(SHARED_DATA / "mix" / "realmix1.wav"), normalize(" ".join(t for _, t in sorted(turns)))))
    return out


def corpus_wer(items, texts):
    errors = sum(edit_distance(ref, normalize(texts[path])) for path, ref in items)
    return errors / sum(len(ref) for _, ref in items)


def colloquy_texts(binary, model, precision, files):
    cmd = [binary, "transcribe", "--whisper-only", "--format", "json", "--model", model, "--precision", precision]
    out = subprocess.run(cmd + files, check=True, capture_output=True, text=True).stdout
    texts = {}
    for line in out.splitlines():
        r = json.loads(line)
        texts[r["file"]] = " ".join(s["text"].strip() for s in r["segments"])
    return texts


def fw_texts(fw_py, ct2, compute_type, files):
    out = subprocess.run([str(fw_py), "-c", FW_SCRIPT, str(ct2), compute_type] + files,
                         check=True, capture_output=True, text=True).stdout
    return {r["file"]: r["text"] for r in map(json.loads, out.splitlines())}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="tiny.en,base")
    ap.add_argument("--precisions", default="fp32,int8")
    ap.add_argument("--no-faster-whisper", action="store_true")
    ap.add_argument("--colloquy", default=str(REPO / "target" / "release" / "colloquy"))
    ap.add_argument("--json", default=str(REPO / "target" / "bench" / "int8_parity.json"))
    args = ap.parse_args()
    data = sets()
    files = [p for items in data.values() for p, _ in items]
    fw_py = None if args.no_faster_whisper else ensure_fw_venv()
    results = {}
    for model in args.models.split(","):
        for precision in args.precisions.split(","):
            engines = [("colloquy", lambda: colloquy_texts(args.colloquy, model, precision, files))]
            if fw_py is not None and model in ("tiny.en", "base"):
                ct = "float32" if precision == "fp32" else precision
                engines.append(("faster-whisper", lambda: fw_texts(fw_py, ensure_ct2_dir(model), ct, files)))
            for engine, run in engines:
                log(f"{engine} {model} {precision}")
                try:
                    texts = run()
                except subprocess.CalledProcessError as e:
                    # a precision colloquy does not offer for the model is refused
                    why = (e.stderr or "").strip().splitlines()
                    log(f"{engine:15s} {model:8s} {precision:5s} refused: {why[-1] if why else e}")
                    results[f"{engine} {model} {precision}"] = {"refused": why[-1] if why else str(e)}
                    continue
                row = {name: corpus_wer(items, texts) for name, items in data.items()}
                results[f"{engine} {model} {precision}"] = row
                log(f"{engine:15s} {model:8s} {precision:5s} " +
                    "  ".join(f"{name} {100 * w:5.1f}%" for name, w in row.items()))
    for model in args.models.split(","):
        base = results.get(f"colloquy {model} fp32")
        for precision in args.precisions.split(","):
            row = results.get(f"colloquy {model} {precision}")
            if base and row and "refused" not in base and "refused" not in row and precision != "fp32":
                worst = max(100 * (row[k] - base[k]) for k in row)
                log(f"colloquy {model} {precision}: worst set {worst:+.1f} WER points against fp32 "
                    f"({'within' if worst <= 0.5 else 'NOT within'} 0.5)")
    write_report(args.json, results)


if __name__ == "__main__":
    main()
