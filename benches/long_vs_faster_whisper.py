#!/usr/bin/env python3
"""Long recordings (issue #11), side by side on one machine: faster-whisper
sequential and faster-whisper's BatchedInferencePipeline (batch 8, without
and with word timestamps, which colloquy always computes) against
colloquy's Whisper alone (`transcribe --whisper-only`, default settings:
batched) and colloquy's whole pipeline (diarization included), on the files
benches/make_long_audio.sh builds from ../shared/data:

  joined14.wav  the 14 single-speaker clips joined: wall seconds and WER
                (reference: the clips' texts joined, same normaliser);
  long45.wav    45 minutes: wall seconds, word counts, peak RSS;
  long3h.wav    3 hours, whole pipeline only, with --with-3h (long).

Wall seconds include decoding the file and exclude model loading:
faster-whisper is timed in-process, colloquy's Whisper by its own
`performance_metrics.total_seconds` (decoding, VAD, Whisper) and its
pipeline by the job's total (`total_duration`: admission to result); the
process wall time is kept too. Peak RSS of every process. Engines alternate; --runs N
keeps each engine's fastest run.

    python3 benches/long_vs_faster_whisper.py [--runs 1] [--files joined14,long45] [--with-3h]
        [--device cpu|cuda] [--batch 8]     (benches/gpu_bench.sh runs it on a GPU)
        [--no-faster-whisper] [--audio DIR] [--manifest TSV]
                                            (colloquy alone, on files built elsewhere)
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from faster_whisper_env import REPO, ensure_ct2_dir, ensure_fw_venv, log, write_report  # noqa: E402
from whisper_vs_faster_whisper import edit_distance, normalize, peak_rss_of  # noqa: E402

FW_SCRIPT = r"""
import json, sys, time
from faster_whisper import WhisperModel, BatchedInferencePipeline
model_dir, mode, f, device, batch = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
model = WhisperModel(model_dir, device=device, compute_type="float32", cpu_threads=2)
t0 = time.perf_counter()
if mode.startswith("batched"):
    # "batched_words": with word timestamps, as colloquy always computes them
    segments, info = BatchedInferencePipeline(model=model).transcribe(
        f, beam_size=1, language="en", batch_size=batch, word_timestamps=mode == "batched_words")
else:
    segments, info = model.transcribe(f, beam_size=1, language="en")
text = " ".join(s.text.strip() for s in segments)
print(json.dumps({"seconds": time.perf_counter() - t0, "text": text}), flush=True)
"""


def reference_joined14(manifest):
    words = []
    with open(manifest) as f:
        header = f.readline().rstrip("\n").split("\t")
        for line in f:
            r = dict(zip(header, line.rstrip("\n").split("\t")))
            if r["group"] == "single":
                words += normalize(r["reference"])
    return words


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--files", default="joined14,long45")
    ap.add_argument("--with-3h", action="store_true")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                    help="faster-whisper's device (colloquy's comes from COLLOQUY__RUNTIME__DEVICE)")
    ap.add_argument("--batch", type=int, default=8, help="faster-whisper's batch size in batched mode")
    ap.add_argument("--model", default="tiny.en", choices=["tiny.en", "base"], help="both engines' Whisper")
    ap.add_argument("--colloquy", default=str(REPO / "target" / "release" / "colloquy"))
    ap.add_argument("--json", default=str(REPO / "target" / "bench" / "long_vs_faster_whisper.json"))
    ap.add_argument("--no-faster-whisper", action="store_true",
                    help="colloquy alone (faster-whisper cannot run there, e.g. no CUDA 12 for CTranslate2)")
    ap.add_argument("--engines", help="only these, comma-separated (e.g. colloquy_whisper)")
    ap.add_argument("--audio", help="a folder already holding the files (default: benches/make_long_audio.sh builds them)")
    ap.add_argument("--manifest", default=str(REPO.parent / "shared" / "data" / "asr_manifest.tsv"),
                    help="the shared data's asr_manifest.tsv (joined14's reference)")
    args = ap.parse_args()
    if args.audio:
        audio = Path(args.audio)
    else:
        subprocess.run(["bash", str(REPO / "benches" / "make_long_audio.sh")], check=True)
        audio = REPO / "target" / "bench" / "audio"
    ref = reference_joined14(args.manifest)
    if not args.no_faster_whisper:
        fw_py = ensure_fw_venv()
        ct2 = str(ensure_ct2_dir(args.model))
    results = {}

    def fw(mode, f):
        lines, rss, _ = peak_rss_of([fw_py, "-c", FW_SCRIPT, ct2, mode, str(f), args.device, str(args.batch)])
        r = json.loads(lines[-1])
        return r["seconds"], r["text"], rss

    def ours(whisper_only, f):
        cmd = [args.colloquy, "transcribe", "--model", args.model, "--format", "json", str(f)]
        if whisper_only:
            cmd.insert(2, "--whisper-only")
        lines, rss, wall = peak_rss_of(cmd)
        r = json.loads("\n".join(lines))
        r = r[0] if isinstance(r, list) else r
        if whisper_only:
            segs = r["segments"]
            # decoding the file, VAD and Whisper; model loading excluded (as faster-whisper's timing)
            seconds = r["performance_metrics"]["total_seconds"]
            stages = None
        else:
            segs = r["segments"]
            seconds = r["performance_metrics"]["total_duration"]
            stages = r["performance_metrics"]["stages"]
        text = " ".join(s["text"].strip() for s in segs)
        # "cuda", "cpu", or "mixed": a run that fell back to the CPU shows it
        return seconds, text, rss, stages, wall, r.get("provider", {}).get("device")

    files = args.files.split(",") + (["long3h"] if args.with_3h else [])
    for name in files:
        f = audio / f"{name}.wav"
        batched = f"fw_batched{args.batch}"
        words = f"fw_batched{args.batch}_words"
        engines = ["fw_sequential", batched, words, "colloquy_whisper", "colloquy_pipeline"]
        if name == "long3h":
            engines = ["colloquy_pipeline"]
        elif args.no_faster_whisper:
            engines = ["colloquy_whisper", "colloquy_pipeline"]
        if args.engines:
            engines = [e for e in engines if e in args.engines.split(",")]
        best = {}
        for run in range(args.runs):
            for e in engines:
                log(f"{name} run {run + 1}: {e}")
                if e.startswith("fw_"):
                    mode = {batched: "batched", words: "batched_words"}.get(e, "sequential")
                    s, text, rss = fw(mode, f)
                    row = {"seconds": s, "rss_mb": rss}
                else:
                    s, text, rss, stages, wall, device = ours(e == "colloquy_whisper", f)
                    row = {"seconds": s, "process_seconds": wall, "rss_mb": rss, "stages": stages, "device": device}
                hyp = normalize(text)
                row["words"] = len(hyp)
                if name == "joined14":
                    row["wer"] = edit_distance(ref, hyp) / len(ref)
                if e not in best or row["seconds"] < best[e]["seconds"]:
                    best[e] = row
                log(f"  {e}: {row['seconds']:.1f} s, {row['words']} words, stages {row.get('stages')}")
                # after each run: a bench cut short keeps what it measured
                write_report(args.json, {**results, name: best})
        results[name] = best
        for e, r in best.items():
            wer = f" WER {100 * r['wer']:.1f}%" if "wer" in r else ""
            dev = f"  on {r['device']}" if r.get("device") else ""
            log(f"{name:9s} {e:18s} {r['seconds']:8.1f} s  words {r['words']:6d}  peak RSS {r['rss_mb']:6.0f} MB{wer}{dev}")
        if "fw_sequential" in best and batched in best:
            seq, bat = best["fw_sequential"]["seconds"], best[batched]["seconds"]
            for e in ("colloquy_whisper", "colloquy_pipeline"):
                if e not in best:
                    continue
                s = best[e]["seconds"]
                with_words = (f", {best[words]['seconds'] / s:.2f}x batched with word timestamps"
                              if words in best else "")
                log(f"{name:9s} {e}: {seq / s:.2f}x faster-whisper sequential, {bat / s:.2f}x batched{with_words}; "
                    f"{s / seq:.2f} of sequential's wall time")


if __name__ == "__main__":
    main()
