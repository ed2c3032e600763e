"""How the artifact store encodes one item: [0, 1] quantisation, byte shuffle, a codec.

Chosen by ``bench/store.py`` (numbers in ``bench/store.md``): CAMs as uint8 at
255 levels (float16 before; the seed labels change on 0.2-0.5 % of the demo's
pixels and 0.01-0.14 % of VOC-size CAMs' depending on the background threshold,
and the demo's seed mIoU moves by at most 0.0008 either way: within noise) and
every item LZ4-compressed: 3-4x faster to read than zlib at 1.2-1.3x its size,
and 2.4-8x faster to write than LZ4-HC; one-byte items of 64 KiB and more at LZ4
acceleration 256, which decodes VOC-size CAMs 3.5x faster for 2x the bytes. zlib
(``zlib1``) is the fallback where the ``lz4`` package is missing, and ``raw`` stores the
bytes as they are.
Multi-byte dtypes are byte-shuffled first (the bytes of equal significance
together), which compresses float maps better.

Reading (:class:`Decoder`): a quantised item's integers are LZ4-decoded into a buffer
kept between reads and converted to float32 in two numpy passes (astype, then an
in-place division: k / levels, correctly rounded; a multiplication by 1 / 255 is off by
one ulp on 126 of the 256 levels). The item CRC-32 is zlib-ng's where that package is
installed (the same values, 5-10x faster than zlib's on 100 KB items). :meth:`Decoder.integers`
gives a quantised item's integers themselves, LZ4-decoded straight into the returned array
(``MapReader.get_levels``: half the read time of a float32 VOC-size CAM, bench/store.md).
"""
from __future__ import annotations

import ctypes
import importlib
import logging
import math
import threading
import zlib

import numpy as np

try:  # optional at import: a box without it writes zlib1 and reads every file but LZ4 ones
    import lz4.block as _lz4
except ImportError:  # pragma: no cover - exercised on boxes without lz4
    _lz4 = None

try:  # optional (the zlib-ng package): zlib's CRC-32, the same values, computed with SIMD
    from zlib_ng.zlib_ng import crc32
except ImportError:  # pragma: no cover - depends on the install
    from zlib import crc32

log = logging.getLogger(__name__)

CODECS = ("lz4", "lz4hc", "zlib1", "raw")
DEFAULT_CODEC = "lz4"
# LZ4's acceleration for "lz4" items of one-byte values (quantised CAMs, masks) of at least
# LZ4_ACCELERATE_FROM bytes; other items use 1 (a writer setting: any value decodes the same
# way). A higher value finds fewer, longer matches: more bytes, but fewer sequences for the
# decoder to branch on, which is what a large item's read waits for (VOC-size CAMs at 256: 2x
# the bytes, a 3.5x faster decode); a small item's read is mostly per-call costs, so it keeps
# the smaller encoding (bench/store.md).
LZ4_ACCELERATION = 256
LZ4_ACCELERATE_FROM = 1 << 16


def _lz4_decompress_into():
    """``LZ4_decompress_safe`` of the lz4 package's own library, to decode into a buffer we
    own (python-lz4 decodes into a new buffer and copies it out); None where it is not found."""
    if _lz4 is None:
        return None
    try:
        fn = ctypes.CDLL(importlib.import_module("lz4.block._block").__file__).LZ4_decompress_safe
    except (ImportError, OSError, AttributeError):  # pragma: no cover - another lz4 build
        return None
    fn.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_LZ4_INTO = _lz4_decompress_into()
_INT_MAX = 2**31 - 1  # LZ4's sizes are C ints


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
    if codec == "lz4hc":
        return _lz4.compress(data, mode="high_compression", store_size=False)
    # Shuffled multi-byte items lose more bytes to it (u16 CAMs: 20 -> 30 % of npy) and wait
    # on their un-shuffle anyway: acceleration 1.
    large = array.itemsize == 1 and data.nbytes >= LZ4_ACCELERATE_FROM
    acceleration = LZ4_ACCELERATION if large else 1
    return _lz4.compress(data, mode="fast", acceleration=acceleration, store_size=False)


def _decoded_bytes(blob: bytes | bytearray, codec: str, size: int, into: np.ndarray | None) -> np.ndarray:
    """The ``size`` stored bytes of ``blob`` as a flat uint8 array: decoded into ``into`` (a
    reused buffer, at least ``size`` long) where the codec can, else into new memory; ``raw``
    with ``into`` gives a read-only view of ``blob``."""
    if codec == "raw":
        data = blob if into is not None or isinstance(blob, bytearray) else bytearray(blob)
    elif codec == "zlib1":
        data = bytearray(zlib.decompress(blob))
    elif codec in ("lz4", "lz4hc"):
        if _lz4 is None:
            raise CodecError(f"codec {codec!r} needs the lz4 package (pip install lz4)")
        if _LZ4_INTO is not None and isinstance(blob, bytes) and size <= _INT_MAX:
            out = into[:size] if into is not None else np.empty(size, np.uint8)
            got = _LZ4_INTO(blob, out.ctypes.data, len(blob), size)
            if got != size:
                raise CodecError(f"decoded {got} bytes, expected {size}" if got >= 0 else "malformed LZ4 data")
            return out
        data = _lz4.decompress(blob, uncompressed_size=size, return_bytearray=True)
    else:
        raise CodecError(f"unknown store codec {codec!r}")
    if len(data) != size:
        raise CodecError(f"decoded {len(data)} bytes, expected {size}")
    return np.frombuffer(data, np.uint8)


def decode(blob: bytes | bytearray, codec: str, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """The writable array that :func:`encode` stored as ``blob``."""
    return Decoder(codec, None)(blob, np.dtype(dtype), tuple(shape))


class Decoder:
    """Decodes the items of one file: ``codec``, and ``levels`` for a quantised file (its items
    come back as float32, see :func:`dequantise`). What is only an intermediate (a quantised
    item's integers, a shuffled item's planes) is decoded into one buffer kept between calls,
    so a read writes the returned array and little else (bench/store.md)."""

    def __init__(self, codec: str, levels: int | None):
        if codec not in CODECS:
            raise CodecError(f"unknown store codec {codec!r}")
        self.codec, self.levels = codec, levels or None
        self._scale = np.float32(levels) if levels else None
        self._local = threading.local()  # one buffer per thread: a reader may be shared by threads

    def _scratch_of(self, size: int) -> np.ndarray:
        buf = getattr(self._local, "buf", None)
        if buf is None or buf.size < size:
            buf = self._local.buf = np.empty(size, np.uint8)
        return buf

    def __call__(self, blob: bytes | bytearray, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        """The item stored as ``blob`` (``dtype``: a numpy dtype; ``shape``: a tuple)."""
        size = math.prod(shape) * dtype.itemsize
        if size == 0:
            return np.zeros(shape, np.float32 if self.levels else dtype)
        shuffled = self.codec != "raw" and dtype.itemsize > 1
        into = self._scratch_of(size) if self.levels or shuffled else None
        flat = _decoded_bytes(blob, self.codec, size, into)
        if shuffled:  # a new array: never the scratch buffer
            flat = np.ascontiguousarray(flat.reshape(dtype.itemsize, -1).T)
        array = flat.view(dtype).reshape(shape)
        if self.levels is None:
            return array
        out = array.astype(np.float32)  # as dequantise(): the same float32 to the last bit
        out /= self._scale
        return out

    def integers(self, blob: bytes | bytearray, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        """A quantised item's integers 0..levels as stored (a new array: decoded straight into it,
        with no float32 conversion; :meth:`__call__` gives ``dequantise`` of exactly these)."""
        if self.levels is None:
            raise CodecError("the item is not quantised: it has no levels")
        size = math.prod(shape) * dtype.itemsize
        if size == 0:
            return np.zeros(shape, dtype)
        if self.codec == "raw":  # a writable copy of the read bytes
            flat = _decoded_bytes(bytearray(blob), self.codec, size, None)
        elif dtype.itemsize > 1:  # shuffled planes, un-shuffled into a new array
            flat = _decoded_bytes(blob, self.codec, size, self._scratch_of(size))
            flat = np.ascontiguousarray(flat.reshape(dtype.itemsize, -1).T)
        else:
            flat = _decoded_bytes(blob, self.codec, size, np.empty(size, np.uint8))
        return flat.reshape(-1).view(dtype).reshape(shape)


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
