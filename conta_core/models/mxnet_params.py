"""Read and write MXNet ``.params`` files (an NDArray list) with numpy only, no MXNet.

AffinityNet and SEAM start ResNet-38 from Wu et al.'s ImageNet model
``ilsvrc-cls_rna-a1_cls1000_ep-0001.params`` (model A1, MXNet, 2016), which
their code converts with ``mxnet.nd.load``. This module reads the same file
layout directly (MXNet's ``NDArray::Save`` of a list, ``src/ndarray/ndarray.cc``):

    uint64 0x112 (list magic)   uint64 reserved
    uint64 n                    n arrays, each:
        [uint32 magic]          0xF993FAC9 (V2) or 0xF993FACA (V3): + int32 storage type
                                0xF993FAC8 (V1): no storage type
                                anything else: legacy, the word itself is ndim
        shape                   V1/V2: uint32 ndim + int64 dims; V3: int32 ndim + int64 dims;
                                legacy: uint32 dims
        (ndim 0: empty array, nothing follows)
        int32 dev_type, int32 dev_id      (the context it was saved from)
        int32 type flag         0 float32, 1 float64, 2 float16, 3 uint8, 4 int32, 5 int8, 6 int64
        raw little-endian data, C order
    uint64 m                    m keys, each uint64 length + bytes ("arg:name" / "aux:name")

Only dense arrays (storage type 0) occur in model files; sparse ones are refused.
:func:`write_params` writes the V2 layout (used by tests and by anyone who
wants a small file of the same format).
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

LIST_MAGIC = 0x112
V1_MAGIC, V2_MAGIC, V3_MAGIC = 0xF993FAC8, 0xF993FAC9, 0xF993FACA
DTYPES = {0: np.float32, 1: np.float64, 2: np.float16, 3: np.uint8, 4: np.int32, 5: np.int8, 6: np.int64}


class ParamsFormatError(ValueError):
    """The file is not an MXNet NDArray list this reader understands."""


class _Reader:
    def __init__(self, data: bytes, path: Path):
        self.data, self.pos, self.path = data, 0, path

    def take(self, size: int) -> bytes:
        if self.pos + size > len(self.data):
            raise ParamsFormatError(f"{self.path}: truncated at byte {self.pos} (wanted {size} more bytes)")
        chunk = self.data[self.pos:self.pos + size]
        self.pos += size
        return chunk

    def unpack(self, fmt: str):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))


def _read_array(r: _Reader, index: int) -> np.ndarray:
    (magic,) = r.unpack("I")
    if magic in (V2_MAGIC, V3_MAGIC):
        (stype,) = r.unpack("i")
        if stype != 0:
            raise ParamsFormatError(f"{r.path}: array {index} has sparse storage type {stype}; "
                                    "only dense arrays are supported")
        (ndim,) = r.unpack("i" if magic == V3_MAGIC else "I")
        shape = r.unpack(f"{ndim}q") if ndim > 0 else ()
    elif magic == V1_MAGIC:
        (ndim,) = r.unpack("I")
        shape = r.unpack(f"{ndim}q")
    else:  # legacy: the first word was ndim, dims are uint32
        ndim = magic
        if ndim > 32:
            raise ParamsFormatError(f"{r.path}: array {index} starts with {magic:#x}, neither an NDArray "
                                    "magic nor a plausible number of dimensions")
        shape = r.unpack(f"{ndim}I")
    if ndim <= 0:
        return np.zeros((0,), np.float32)
    r.unpack("ii")  # context (dev_type, dev_id): irrelevant once on the host
    (flag,) = r.unpack("i")
    if flag not in DTYPES:
        raise ParamsFormatError(f"{r.path}: array {index} has unknown type flag {flag}")
    dtype = np.dtype(DTYPES[flag]).newbyteorder("<")
    count = int(np.prod(shape))
    data = np.frombuffer(r.take(count * dtype.itemsize), dtype=dtype, count=count)
    return data.reshape(shape).astype(dtype.newbyteorder("="))


def read_params(path: str | Path) -> dict[str, np.ndarray]:
    """name -> array of an MXNet ``.params`` file; names keep their ``arg:``/``aux:`` prefix."""
    path = Path(path)
    r = _Reader(path.read_bytes(), path)
    if len(r.data) < 16:
        raise ParamsFormatError(f"{path}: {len(r.data)} bytes is too short for an MXNet .params file")
    magic, _reserved = r.unpack("QQ")
    if magic != LIST_MAGIC:
        raise ParamsFormatError(f"{path}: starts with {magic:#x}, not MXNet's NDArray-list magic 0x112 "
                                "(is it a PyTorch .pth? then give it as a .pth path)")
    (count,) = r.unpack("Q")
    arrays = [_read_array(r, i) for i in range(count)]
    (num_keys,) = r.unpack("Q")
    if num_keys != count:
        raise ParamsFormatError(f"{path}: {count} arrays but {num_keys} names")
    keys = []
    for _ in range(num_keys):
        (length,) = r.unpack("Q")
        keys.append(r.take(length).decode("utf-8"))
    if r.pos != len(r.data):
        raise ParamsFormatError(f"{path}: {len(r.data) - r.pos} unread bytes after the names")
    return dict(zip(keys, arrays))


def write_params(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` as an MXNet V2 NDArray list (what ``mx.nd.save`` writes)."""
    codes = {np.dtype(v): k for k, v in DTYPES.items()}
    out = [struct.pack("<QQQ", LIST_MAGIC, 0, len(arrays))]
    for name, array in arrays.items():
        array = np.ascontiguousarray(array)
        if array.dtype not in codes:
            raise ValueError(f"{name}: dtype {array.dtype} has no MXNet type flag")
        out.append(struct.pack("<Iii", V2_MAGIC, 0, array.ndim))
        out.append(struct.pack(f"<{array.ndim}q", *array.shape))
        out.append(struct.pack("<iii", 1, 0, codes[array.dtype]))  # cpu(0)
        out.append(array.astype(array.dtype.newbyteorder("<")).tobytes())
    out.append(struct.pack("<Q", len(arrays)))
    for name in arrays:
        encoded = name.encode("utf-8")
        out.append(struct.pack("<Q", len(encoded)) + encoded)
    Path(path).write_bytes(b"".join(out))
