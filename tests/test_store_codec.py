"""The store's item codec and read path (conta_core.store_codec): the exact dequantised values,
a fresh array per read, LZ4's acceleration as a writer setting, the CRC-32, threads."""
import zlib
from concurrent.futures import ThreadPoolExecutor

import h5py
import numpy as np
import pytest

from conta_core import store_codec
from conta_core.store import DamagedStoreFile, MapReader, MapWriter, StoreError, _crc_attrs

# float32(k / 255) per level: k / 255 in float64 lies far from any float32 rounding midpoint,
# so this is the correctly rounded quotient, worked out without the store's array code.
LEVELS = np.array([k / 255 for k in range(256)], dtype=np.float32)


def _levels(shape, seed) -> np.ndarray:
    """Smooth-ish levels (LZ4 finds matches), every level 0..255 present."""
    rng = np.random.default_rng(seed)
    k = np.clip(np.cumsum(rng.integers(-2, 3, shape), axis=-1) + 128, 0, 255).astype(np.uint8)
    flat = k.reshape(-1)
    flat[:256] = np.arange(min(256, flat.size))
    return k


def test_dequantised_values_are_exact_and_each_read_is_a_fresh_array(tmp_path):
    levels = {"small": _levels((2, 20, 30), 0), "large": _levels((2, 200, 300), 1)}
    assert levels["small"].nbytes < store_codec.LZ4_ACCELERATE_FROM <= levels["large"].nbytes
    path = tmp_path / "cam.h5"
    with MapWriter(path, kind="cam", quantize=255) as w:
        for image_id, k in levels.items():
            w.put(image_id, LEVELS[k])
    with MapReader(path) as r:
        first = r.get("large")
        for image_id in ("small", "large", "small"):
            got = r.get(image_id)
            assert got.dtype == np.float32 and got.flags.owndata and got.flags.writeable
            np.testing.assert_array_equal(got.view(np.uint32), LEVELS[levels[image_id]].view(np.uint32))
            got[...] = -1.0  # the caller's to change: nothing the reader keeps
        np.testing.assert_array_equal(first.view(np.uint32), LEVELS[levels["large"]].view(np.uint32))


def test_lz4_acceleration_is_a_writer_setting(tmp_path, monkeypatch):
    small, large = _levels((1, 30, 30), 2), _levels((3, 150, 160), 3)
    sizes = {}
    for acceleration in (1, 256):
        monkeypatch.setattr(store_codec, "LZ4_ACCELERATION", acceleration)
        path = tmp_path / f"a{acceleration}.h5"
        with MapWriter(path, kind="cam", quantize=255) as w:
            w.put("small", LEVELS[small])
            w.put("large", LEVELS[large])
        with MapReader(path) as r:
            sizes[acceleration] = {i: r._entries[i][1] for i in r.ids()}
            np.testing.assert_array_equal(r.get("large"), LEVELS[large])
            np.testing.assert_array_equal(r.get("small"), LEVELS[small])
    assert sizes[1]["small"] == sizes[256]["small"]  # below LZ4_ACCELERATE_FROM: acceleration 1
    assert sizes[1]["large"] < sizes[256]["large"]
    wide = LEVELS[large].astype(np.float16)  # 144 KB, shuffled
    blobs = []
    for acceleration in (1, 256):
        monkeypatch.setattr(store_codec, "LZ4_ACCELERATION", acceleration)
        blobs.append(store_codec.encode(wide, "lz4"))
    assert blobs[0] == blobs[1]  # multi-byte items: acceleration 1 whatever their size
    planes = store_codec._shuffle(wide)  # where acceleration 256 would have made a difference
    assert store_codec._lz4.compress(planes, mode="fast", acceleration=256, store_size=False) != blobs[0]


@pytest.mark.parametrize("size", [0, 1, 7, 5000, 100_003])
def test_the_crc32_is_zlibs(size):
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    for form in (data, bytearray(data), memoryview(data)):
        assert store_codec.crc32(form) == zlib.crc32(data)


def test_malformed_or_short_lz4_data_is_refused():
    decoder = store_codec.Decoder("lz4", 255)
    with pytest.raises(Exception):  # noqa: B017 - python-lz4's own error where it decodes
        decoder(b"\xff" * 10, np.dtype(np.uint8), (4, 4))
    blob = store_codec.encode(np.arange(16, dtype=np.uint8), "lz4")
    with pytest.raises(Exception, match="16"):  # 16 bytes where 32 were expected
        decoder(blob, np.dtype(np.uint8), (4, 8))
    if store_codec._LZ4_INTO is not None:
        with pytest.raises(store_codec.CodecError, match="decoded 16 bytes, expected 32"):
            decoder(blob, np.dtype(np.uint8), (4, 8))


def test_a_reader_shared_by_threads_reads_the_right_values(tmp_path):
    levels = {f"img_{i}": _levels((1 + i % 3, 90 + 7 * i, 120), i) for i in range(8)}
    path = tmp_path / "cam.h5"
    with MapWriter(path, kind="cam", quantize=255) as w:
        for image_id, k in levels.items():
            w.put(image_id, LEVELS[k])
    with MapReader(path) as r, ThreadPoolExecutor(4) as pool:
        ids = list(levels) * 25
        for image_id, got in zip(ids, pool.map(r.get, ids)):
            np.testing.assert_array_equal(got, LEVELS[levels[image_id]])


def test_an_intact_file_with_an_unknown_codec_is_refused_not_deleted(tmp_path):
    path = tmp_path / "cam.h5"
    with MapWriter(path, kind="cam", quantize=255) as w:
        w.put("a", LEVELS[_levels((1, 5, 5), 4)])
    with h5py.File(path, "r+") as f:  # as a newer version might write it, checksums and all
        raw = f["index"][()].tobytes().replace(b'"codec": "lz4"', b'"codec": "lz9"')
        f["index"][:] = np.frombuffer(raw, np.uint8)
        f.attrs["index_crc32"] = zlib.crc32(raw)
        f.attrs["root_crc32"] = _crc_attrs(f.attrs, ("root_crc32",))
    with pytest.raises(StoreError, match="unknown store codec 'lz9'") as err:
        MapReader(path)
    assert not isinstance(err.value, DamagedStoreFile) and path.exists()
