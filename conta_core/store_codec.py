"""How the artifact store encodes one item: [0, 1] quantisation, byte shuffle, a codec.

Chosen by ``bench/store.py`` (numbers in ``bench/store.md``): CAMs as uint8 at
255 levels (float16 before; the seed labels change on 0.2-0.5 % of the demo's
pixels and 0.01-0.14 % of VOC-size CAMs' depending on the background threshold,
and the demo's seed mIoU moves by at most 0.0008 either way: within noise) and
every item LZ4-compressed: 3-4x faster to read than zlib at 1.2-1.3x its size,
and 2.4-8x faster to write than LZ4-HC. zlib (``zlib1``) is the fallback where the
``lz4`` package is missing, and ``raw`` stores the bytes as they are.
Multi-byte dtypes are byte-shuffled first (the bytes of equal significance
together), which compresses float maps better.
"""
from __future__ import annotations

import logging
import zlib

import numpy as np

try:  # optional at import: a box without it writes zlib1 and reads every file but LZ4 ones
    import lz4.block as _lz4
except ImportError:  # pragma: no cover - exercised on boxes without lz4
    _lz4 = None

log = logging.getLogger(__name__)

CODECS = ("lz4", "lz4hc", "zlib1", "raw")
DEFAULT_CODEC = "lz4"


class CodecError(ValueError):
    """An item that cannot be encoded or decoded as asked."""


def writer_codec(codec: str | None) -> str:
    """The codec a writer uses: ``codec`` (default :data:`DEFAULT_CODEC`); LZ4 falls back to zlib1."""
    codec = codec or DEFAULT_CODEC
    if codec not in CODECS:
        raise CodecError(f"unknown store codec {codec!r} (one of {', '.join(CODECS)})")
    if codec.startswith("lz4") and _lz4 is None:
        log.warning("the lz4 package is not installed: artifacts are written with zlib (slower to read)")
        return "zlib1"
    return codec


def _shuffle(array: np.ndarray) -> memoryview:
    if array.itemsize == 1:
        return memoryview(array).cast("B")
    planes = array.reshape(-1).view(np.uint8).reshape(-1, array.itemsize).T
    return memoryview(np.ascontiguousarray(planes)).cast("B")


def encode(array: np.ndarray, codec: str) -> bytes:
    """The stored bytes of a C-contiguous ``array``."""
    if array.nbytes == 0:
        return b""
    if codec == "raw":
        return array.tobytes()
    data = _shuffle(array)
    if codec == "zlib1":
        return zlib.compress(data, 1)
    if _lz4 is None:
        raise CodecError(f"codec {codec!r} needs the lz4 package (pip install lz4)")
    mode = "high_compression" if codec == "lz4hc" else "default"
    return _lz4.compress(data, mode=mode, store_size=False)


def decode(blob: bytes | bytearray, codec: str, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """The writable array that :func:`encode` stored as ``blob``."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size == 0:
        return np.zeros(shape, dtype)
    if codec == "raw":
        data = blob if isinstance(blob, bytearray) else bytearray(blob)
    elif codec == "zlib1":
        data = bytearray(zlib.decompress(blob))
    elif codec in ("lz4", "lz4hc"):
        if _lz4 is None:
            raise CodecError(f"codec {codec!r} needs the lz4 package (pip install lz4)")
        data = _lz4.decompress(blob, uncompressed_size=size, return_bytearray=True)
    else:
        raise CodecError(f"unknown store codec {codec!r}")
    if len(data) != size:
        raise CodecError(f"decoded {len(data)} bytes, expected {size}")
    flat = np.frombuffer(data, np.uint8)
    if codec != "raw" and dtype.itemsize > 1:
        flat = np.ascontiguousarray(flat.reshape(dtype.itemsize, -1).T)
    return flat.view(dtype).reshape(shape)


def quantised_dtype(levels: int) -> np.dtype:
    if not 1 <= levels <= 65535:
        raise CodecError(f"quantize: {levels} levels; 1..65535 fit uint8/uint16")
    return np.dtype(np.uint8 if levels <= 255 else np.uint16)


def quantise(array: np.ndarray, levels: int) -> np.ndarray:
    """Maps in [0, 1] -> integers 0..levels (round to nearest); anything else is refused."""
    values = np.asarray(array, dtype=np.float32)
    if values.size:
        low, high = float(values.min()), float(values.max())
        if not (0.0 <= low and high <= 1.0):  # NaN fails both comparisons
            raise CodecError(f"values span [{low}, {high}]; quantisation stores maps in [0, 1]")
    return np.rint(values * np.float32(levels)).astype(quantised_dtype(levels))


def dequantise(array: np.ndarray, levels: int) -> np.ndarray:
    """Integers 0..levels -> float32 in [0, 1] (the peak 1.0 exactly)."""
    out = array.astype(np.float32)
    out /= np.float32(levels)
    return out
