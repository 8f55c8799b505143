#!/usr/bin/env python3
"""Read PyTorch zip checkpoints (torch.save and TorchScript archives) without torch.

A torch zip holds `<prefix>/data.pkl` (or `constants.pkl` in TorchScript archives)
and raw little-endian storages under `<prefix>/data/<key>` (`constants/<key>`).
The pickle refers to storages through persistent ids
`('storage', StorageClass, key, location, numel)` and rebuilds tensors with
`torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`.

This module maps those calls onto numpy: a tensor becomes a contiguous copy of
the strided view of its storage (offset and strides in elements, as torch keeps
them). `_rebuild_parameter` returns its tensor, `collections.OrderedDict` is
real, and any other class (pyannote specifications, enums, versions) becomes an
inert `Dummy` that swallows its arguments and state. Nothing from the pickle is
ever executed beyond those mappings.

    from torch_zip import load_torch_zip
    obj = load_torch_zip("pytorch_model.bin")                  # data.pkl
    consts = load_torch_zip("model.pt", pickle_name="constants.pkl")
"""

import collections
import io
import pickle
import zipfile

import numpy as np

# Legacy typed-storage class names -> numpy dtype. bfloat16 is widened to float32.
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16",
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class Dummy:
    """Stand-in for any class the loader does not know; keeps what it was given."""

    def __init__(self, *args, **kwargs):
        self.args = args
        self.kwargs = kwargs
        self.state = None

    def __setstate__(self, state):
        self.state = state

    def __call__(self, *args, **kwargs):
        return Dummy(*args, **kwargs)

    def __repr__(self):
        return f"Dummy({type(self).__qualname__})"


def _dummy_class(module, name):
    return type(name, (Dummy,), {"__module__": module, "__qualname__": f"{module}.{name}"})


class _StorageType:
    def __init__(self, name):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]


class _Storage:
    """A flat storage: the raw bytes of one `data/<key>` entry as a 1-D array."""

    def __init__(self, array):
        self.array = array


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    arr = storage.array
    size = tuple(int(s) for s in size)
    stride = tuple(int(s) for s in stride)
    if len(size) == 0:
        return np.array(arr[storage_offset], dtype=arr.dtype)
    n = 1
    for s in size:
        n *= s
    if n == 0:
        return np.zeros(size, dtype=arr.dtype)
    last = storage_offset + sum((s - 1) * st for s, st in zip(size, stride))
    if storage_offset < 0 or last >= arr.shape[0]:
        raise ValueError(f"tensor view {size}/{stride}+{storage_offset} exceeds storage of {arr.shape[0]}")
    view = np.lib.stride_tricks.as_strided(
        arr[storage_offset:],
        shape=size,
        strides=tuple(st * arr.itemsize for st in stride),
        writeable=False,
    )
    return np.ascontiguousarray(view)


def _rebuild_parameter(data, *_ignored):
    return data


def _rebuild_parameter_with_state(data, *_ignored):
    return data


class _Unpickler(pickle.Unpickler):
    def __init__(self, fileobj, load_storage):
        super().__init__(fileobj)
        self._load_storage = load_storage
        self._storages = {}

    def find_class(self, module, name):
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch._utils" and name == "_rebuild_parameter_with_state":
            return _rebuild_parameter_with_state
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "builtins" and name in ("set", "frozenset", "slice", "complex", "tuple", "list", "dict"):
            return getattr(__import__("builtins"), name)
        return _dummy_class(module, name)

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        _, stype, key, _location, numel = pid[:5]
        if isinstance(stype, _StorageType):
            dtype = stype.dtype
        elif isinstance(stype, Dummy) or isinstance(stype, type):
            # torch >= 2 may write torch.storage.UntypedStorage for byte storages
            dtype = np.uint8
        else:
            raise pickle.UnpicklingError(f"unknown storage type {stype!r}")
        key = str(key)
        if key not in self._storages:
            raw = self._load_storage(key)
            if dtype == "bfloat16":
                u16 = np.frombuffer(raw, dtype="<u2")
                arr = (u16.astype(np.uint32) << 16).view(np.float32)
            else:
                arr = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
                arr = arr.astype(arr.dtype.newbyteorder("="), copy=False)
            if arr.shape[0] < int(numel):
                raise pickle.UnpicklingError(f"storage {key}: {arr.shape[0]} elements, expected {numel}")
            self._storages[key] = _Storage(arr)
        return self._storages[key]


def load_torch_zip(path, pickle_name="data.pkl"):
    """Unpickle `<prefix>/<pickle_name>` of a torch zip, tensors as numpy arrays."""
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("/" + pickle_name) and n.count("/") == 1]
        if not pkl:
            raise ValueError(f"{path}: no {pickle_name} in zip (not a torch zip checkpoint?)")
        prefix = pkl[0].rsplit("/", 1)[0]
        byteorder = f"{prefix}/byteorder"
        if byteorder in names and zf.read(byteorder).strip() not in (b"little", b""):
            raise ValueError(f"{path}: big-endian checkpoints are not supported")
        folder = "constants" if pickle_name == "constants.pkl" else "data"

        def load_storage(key):
            for cand in (f"{prefix}/{folder}/{key}", f"{prefix}/data/{key}", f"{prefix}/{key}"):
                if cand in names:
                    return zf.read(cand)
            raise KeyError(f"{path}: storage {key} not found")

        return _Unpickler(io.BytesIO(zf.read(pkl[0])), load_storage).load()


def find_state_dict(obj):
    """Return the tensor dict of a checkpoint: obj itself or obj['state_dict'] / ['model']."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if key in obj and isinstance(obj[key], dict):
                return obj[key]
        if any(isinstance(v, np.ndarray) for v in obj.values()):
            return obj
    raise ValueError("no state dict found in checkpoint")


if __name__ == "__main__":
    import sys

    sd = load_torch_zip(sys.argv[1], *(sys.argv[2:3]))
    try:
        sd = find_state_dict(sd)
    except ValueError:
        pass
    if isinstance(sd, dict):
        for k, v in sd.items():
            if isinstance(v, np.ndarray):
                print(f"{k}\t{v.dtype}\t{tuple(v.shape)}")
            else:
                print(f"{k}\t{type(v).__name__}")
    else:
        print(type(sd), len(sd) if hasattr(sd, "__len__") else "")
