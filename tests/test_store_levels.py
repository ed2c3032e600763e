"""Quantised CAMs read as their stored levels (``MapReader.get_levels``) and the consumers that
use them (seeds, CAM labels, IR labels, the round's scores): the levels path must give exactly
what the float32 path gives on the same stored CAMs, tie and threshold cases included."""
import h5py
import numpy as np
import pytest

from conta_core import methods, store_codec
from conta_core.cam_labels import background_argmax, cam_to_label, label_stored_cam, levels_at_most
from conta_core.evaluate import score_round
from conta_core.expand.seeds import foreground_seeds, seeds_from_cams
from conta_core.seeds_step import make_seeds
from conta_core.store import DamagedStoreFile, MapReader, MapWriter, ShardedReader, StoreError

# float32(k / 255) per level, worked out without the store's array code (as tests/test_store_codec.py)
LEVELS = np.array([k / 255 for k in range(256)], dtype=np.float32)
# Background scores: the config's, values exactly on a level (0.6 = 153/255), just above and below
# one, out of range, and 0.
THRESHOLDS = (0.05, 0.15, 0.25, 0.3, 0.5, 0.6, float(LEVELS[77]), float(np.nextafter(LEVELS[77], 1)),
              float(np.nextafter(LEVELS[77], 0)), 0.0, -0.5, 1.0, 1.5)


def _levels(shape, seed) -> np.ndarray:
    """Smooth-ish uint8 levels with zero runs and many ties between classes."""
    rng = np.random.default_rng(seed)
    k = np.clip(np.cumsum(rng.integers(-9, 10, shape), axis=-1) + rng.integers(-60, 200, shape[:-1])[..., None],
                0, 255).astype(np.uint8)
    if len(shape) == 3 and shape[0] > 1:  # ties between classes
        k[1, ::3] = k[0, ::3]
    return k


def _cams(n=12, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(n):
        classes = sorted(int(c) for c in rng.choice(np.arange(1, 21), int(rng.integers(1, 4)), replace=False))
        out[f"img_{i}"] = (classes, _levels((len(classes), int(rng.integers(20, 40)), int(rng.integers(20, 40))), i))
    out["img_flat"] = ([3, 5], np.zeros((2, 16, 16), np.uint8))  # no activation anywhere
    out["img_full"] = ([7], np.full((1, 16, 16), 255, np.uint8))  # the peak everywhere
    return out


def _write(path, cams, **kw):
    with MapWriter(path, kind="cam", quantize=255, **kw) as w:
        for image_id, (classes, k) in cams.items():
            w.put(image_id, LEVELS[k], classes=classes)


@pytest.mark.parametrize("codec", ["lz4", "lz4hc", "zlib1", "raw"])
def test_levels_are_the_stored_integers_and_get_is_their_float32(tmp_path, codec):
    cams = _cams(6)
    big = _levels((2, 200, 300), 99)  # >= 64 KiB: written at LZ4 acceleration 256
    cams["big"] = ([1, 2], big)
    path = tmp_path / "cam.h5"
    _write(path, cams, codec=codec)
    with MapReader(path) as r:
        assert r.levels == 255
        first, _ = r.get_levels("big")
        for image_id, (classes, k) in cams.items():
            got, levels = r.get_levels(image_id)
            assert levels == 255 and got.dtype == np.uint8 and got.shape == k.shape and got.flags.writeable
            np.testing.assert_array_equal(got, k)
            np.testing.assert_array_equal(r.get(image_id).view(np.uint32),
                                          store_codec.dequantise(got, levels).view(np.uint32))
            got[...] = 9  # the caller's: the reader keeps nothing of it
        np.testing.assert_array_equal(first, big)
        np.testing.assert_array_equal(r.get_levels("big")[0], big)
        with pytest.raises(StoreError, match="'nope'"):
            r.get_levels("nope")


def test_sixteen_bit_levels_and_unquantised_files(tmp_path):
    k = np.random.default_rng(1).integers(0, 65536, (2, 30, 40)).astype(np.uint16)
    with MapWriter(tmp_path / "u16.h5", kind="cam", quantize=65535) as w:
        w.put("a", k / np.float32(65535))
    with MapReader(tmp_path / "u16.h5") as r:
        got, levels = r.get_levels("a")
        assert levels == 65535 and got.dtype == np.uint16
        np.testing.assert_array_equal(got, k)
        np.testing.assert_array_equal(r.get("a"), store_codec.dequantise(got, levels))
    with MapWriter(tmp_path / "mask.h5", kind="pseudo_mask") as w:
        w.put("a", np.zeros((4, 4), np.uint8))
    with MapReader(tmp_path / "mask.h5") as r:
        assert r.levels is None
        with pytest.raises(StoreError, match="mask.h5: items are not quantised.*get\\(\\)"):
            r.get_levels("a")


def test_sharded_levels_and_a_damaged_item(tmp_path):
    cams = _cams(4)
    ids = list(cams)
    _write(tmp_path / "s0.h5", {i: cams[i] for i in ids[:3]})
    _write(tmp_path / "s1.h5", {i: cams[i] for i in ids[3:]})
    with ShardedReader([tmp_path / "s0.h5", tmp_path / "s1.h5"]) as r:
        assert r.levels == 255
        for image_id in ids:
            np.testing.assert_array_equal(r.get_levels(image_id)[0], cams[image_id][1])
        with pytest.raises(StoreError, match="no shard .* 'nope'"):
            r.get_levels("nope")
    with MapWriter(tmp_path / "s2.h5", kind="cam") as w:  # an unquantised shard: no common levels
        w.put("other", np.zeros((1, 4, 4), np.float32), classes=[1])
    with ShardedReader([tmp_path / "s0.h5", tmp_path / "s2.h5"]) as r:
        assert r.levels is None
    with MapReader(tmp_path / "s0.h5") as r:
        offset, nbytes = r._entries[ids[0]][:2]
    with open(tmp_path / "s0.h5", "r+b") as f:  # flip one stored byte of the item
        f.seek(offset + nbytes // 2)
        byte = f.read(1)
        f.seek(offset + nbytes // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(DamagedStoreFile, match=f"'{ids[0]}' fails its checksum"):
        MapReader(tmp_path / "s0.h5").get_levels(ids[0])


def test_levels_at_most_against_a_brute_force_count():
    for t in THRESHOLDS + tuple(np.linspace(-0.01, 1.01, 397)):
        expected = max([k for k in range(256) if LEVELS[k] <= np.float32(t)], default=-1)
        assert levels_at_most(t, 255) == expected, t
    assert levels_at_most(0.6, 255) == 153 and levels_at_most(0.0, 255) == 0 and levels_at_most(-0.5, 255) == -1


def test_cam_to_label_and_background_argmax_on_levels_equal_the_float_path():
    for classes, k in _cams(20, seed=3).values():
        for t in THRESHOLDS:
            expected = cam_to_label(LEVELS[k], classes, t)
            np.testing.assert_array_equal(cam_to_label(k, classes, t, levels=255), expected)
            np.testing.assert_array_equal(background_argmax(k, t, 255), background_argmax(LEVELS[k], t))
    empty = np.zeros((0, 5, 6), np.uint8)  # an image with no class: all background
    np.testing.assert_array_equal(cam_to_label(empty, [], 0.3, levels=255), cam_to_label(LEVELS[empty], [], 0.3))
    # hand-made: bg 0.6 = level 153 wins its tie; class order breaks a tie between classes
    k = np.array([[[153, 154, 200, 0]], [[100, 154, 201, 0]]], np.uint8)
    np.testing.assert_array_equal(cam_to_label(k, [4, 9], 0.6, levels=255), [[0, 4, 9, 0]])


@pytest.mark.parametrize("rule", ["top_fraction", "max_fraction"])
@pytest.mark.parametrize("fraction", [0.2, 0.5, 0.6, 1.0])
def test_foreground_seeds_on_levels_equal_the_float_path(rule, fraction):
    background = np.random.default_rng(5)
    for classes, k in _cams(20, seed=4).values():
        expected = foreground_seeds(LEVELS[k], classes, fraction, rule)
        np.testing.assert_array_equal(foreground_seeds(k, classes, fraction, rule, levels=255), expected)
        cue = background.random(k.shape[1:]) < 0.3
        np.testing.assert_array_equal(seeds_from_cams(k, classes, cue, fraction=fraction, rule=rule, levels=255),
                                      seeds_from_cams(LEVELS[k], classes, cue, fraction=fraction, rule=rule))


def test_max_fraction_threshold_on_a_level():
    # 0.6 * peak 1.0 = 0.6 = level 153: the float rule keeps 154 and above, not 153
    k = np.array([[[255, 153, 154, 152]]], np.uint8)
    np.testing.assert_array_equal(foreground_seeds(k, [2], 0.6, "max_fraction", levels=255), [[2, 255, 2, 255]])
    np.testing.assert_array_equal(foreground_seeds(LEVELS[k], [2], 0.6, "max_fraction"), [[2, 255, 2, 255]])


class _Index:
    """The few index methods make_seeds and score_round call, on generated images and masks."""

    def __init__(self, cams):
        self.cams, self.num_classes, self.void = cams, 21, 255

    def size(self, image_id):
        return self.cams[image_id][1].shape[1:]

    def read_image(self, image_id):
        h, w = self.size(image_id)
        return np.random.default_rng(len(image_id)).integers(0, 256, (h, w, 3), dtype=np.uint8)

    def has_mask(self, image_id):
        return True

    def read_mask(self, image_id):
        classes, k = self.cams[image_id]
        return cam_to_label(LEVELS[k], classes, 0.4)


class _FloatOnly:
    """A reader without ``levels``: the consumers fall back to get()."""

    def __init__(self, reader):
        self.reader = reader

    def get(self, image_id):
        return self.reader.get(image_id)

    def item_attrs(self, image_id):
        return self.reader.item_attrs(image_id)


class _Writer:
    def __init__(self):
        self.items = {}

    def pending(self, ids):
        return list(ids)

    def put(self, image_id, array, **attrs):
        self.items[image_id] = array


def _no_float_reads(reader, monkeypatch):
    monkeypatch.setattr(reader, "get", lambda image_id: pytest.fail("read as float32"))


@pytest.mark.parametrize("rule", ["top_fraction", "max_fraction"])
def test_make_seeds_reads_levels_and_writes_the_float_paths_seeds(tmp_path, monkeypatch, rule):
    cams = _cams(10, seed=6)
    _write(tmp_path / "cam.h5", cams)
    index = _Index(cams)

    def background(ids, images):
        return [image[..., 0] < 40 for image in images]
    with MapReader(tmp_path / "cam.h5") as r:
        floats, levels = _Writer(), _Writer()
        shares = make_seeds(index, list(cams), _FloatOnly(r), floats, background, rule=rule)
        _no_float_reads(r, monkeypatch)
        assert make_seeds(index, list(cams), r, levels, background, rule=rule) == shares
    assert floats.items.keys() == levels.items.keys() == cams.keys()
    for image_id in cams:
        np.testing.assert_array_equal(levels.items[image_id], floats.items[image_id])


@pytest.mark.parametrize("method", ["irnet", "sec", "dsrg", "seam"])
def test_score_round_on_levels_equals_the_float_path(tmp_path, monkeypatch, method):
    cams = _cams(10, seed=7)
    _write(tmp_path / "cam.h5", cams)
    index, ids = _Index(cams), list(cams)
    labeller = methods.get(method).cam_labeller({"bg_threshold": 0.3, "bg_power": 4})
    assert labeller.takes_levels == (method != "seam")  # SEAM's power background is float arithmetic

    class Masks(dict):
        def get(self, image_id):
            return self[image_id]
    pseudo = Masks({i: index.read_mask(i) for i in ids})
    with MapReader(tmp_path / "cam.h5") as r:
        expected = {name: score_round(index, ids, ids, _FloatOnly(r), pseudo, pseudo, labels)["cam"]
                    for name, labels in (("method", labeller), ("constant", 0.3))}
        if method != "seam":
            _no_float_reads(r, monkeypatch)
        for name, labels in (("method", labeller), ("constant", 0.3)):
            got = score_round(index, ids, ids, r, pseudo, pseudo, labels)["cam"]
            np.testing.assert_array_equal(got.matrix, expected[name].matrix)
    assert 0 < expected["constant"].miou() < 1  # a score that tells the paths apart


def test_label_stored_cam_falls_back_to_float32(tmp_path):
    cams = _cams(2)
    _write(tmp_path / "cam.h5", cams)
    calls = []

    def plain(cam, classes):  # no levels= parameter, no takes_levels: float32
        calls.append(cam.dtype)
        return cam_to_label(cam, classes, 0.3)
    with MapReader(tmp_path / "cam.h5") as r:
        for image_id, (classes, k) in cams.items():
            np.testing.assert_array_equal(label_stored_cam(plain, r, image_id, classes),
                                          cam_to_label(LEVELS[k], classes, 0.3))
    assert calls == [np.float32] * len(cams)


def test_old_format_cams_are_read_as_float32(tmp_path):
    """A conta-maps/1 CAM file (float16, no levels) still feeds the consumers, through get()."""
    from conta_core.store import _crc_attrs
    from conta_core.store_v1 import crc_item

    path = tmp_path / "v1.h5"
    cam = (LEVELS[_levels((2, 6, 8), 8)]).astype(np.float16)
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("items/img", data=cam)
        ds.attrs["classes"] = "json:[1, 2]"
        ds.attrs["attrs_crc32"] = _crc_attrs(ds.attrs, ("crc32", "attrs_crc32"))
        ds.attrs["crc32"] = crc_item("img", cam)
        f.attrs.update({"format": "conta-maps/1", "kind": "cam", "complete": True, "checksum": "crc32/1",
                        "arrays_crc32": "json:{}", "num_items": 1})
        f.attrs["root_crc32"] = _crc_attrs(f.attrs, ("root_crc32",))
    with MapReader(path) as r:
        assert r.levels is None
        with pytest.raises(StoreError, match="not quantised"):
            r.get_levels("img")
        labels = methods.get("irnet").cam_labeller({"bg_threshold": 0.3})
        np.testing.assert_array_equal(label_stored_cam(labels, r, "img", [1, 2]),
                                      cam_to_label(cam.astype(np.float32), [1, 2], 0.3))


def test_ir_labels_on_levels_equal_the_float_path(tmp_path, monkeypatch):
    """workflow_scripts/ir_label.py's call on a stored CAM's levels: the same IR label (the CRF, here a
    stand-in that blurs the hard labels' probabilities, sees the same input either way)."""
    from conta_core.expand.irnet import make_ir_label

    def crf(image, probs, **params):  # deterministic, neighbourhood-dependent like a CRF
        smooth = probs.copy()
        smooth[:, 1:] += probs[:, :-1]
        smooth[:, :, 1:] += probs[:, :, :-1] + (image[None, :, 1:, 0] > 128)
        return smooth
    cams = _cams(10, seed=9)
    _write(tmp_path / "cam.h5", cams)
    index, fg_seen = _Index(cams), set()
    with MapReader(tmp_path / "cam.h5") as r:
        for image_id, (classes, _k) in cams.items():
            image = index.read_image(image_id)
            cam, levels = r.get_levels(image_id)
            for conf_fg, conf_bg in ((0.30, 0.05), (0.6, float(LEVELS[20]))):
                expected = make_ir_label(image, r.get(image_id), classes, conf_fg, conf_bg, crf)
                got = make_ir_label(image, cam, classes, conf_fg, conf_bg, crf, levels=levels)
                np.testing.assert_array_equal(got, expected)
                fg_seen |= set(np.unique(expected).tolist())
    assert {0, 255} <= fg_seen and len(fg_seen) > 4  # background, unsure and several classes


def test_levels_without_the_direct_lz4_decoder(tmp_path, monkeypatch):
    """Where LZ4_decompress_safe is not found, python-lz4 decodes: the same levels, a fresh array."""
    cams = {"a": ([1, 2], _levels((2, 200, 300), 11)), "b": ([3], _levels((1, 20, 30), 12))}
    _write(tmp_path / "cam.h5", cams)
    monkeypatch.setattr(store_codec, "_LZ4_INTO", None)
    with MapReader(tmp_path / "cam.h5") as r:
        first, _ = r.get_levels("a")
        for image_id, (_classes, k) in cams.items():
            got, levels = r.get_levels(image_id)
            assert levels == 255 and got.flags.writeable
            np.testing.assert_array_equal(got, k)
        np.testing.assert_array_equal(first, cams["a"][1])
