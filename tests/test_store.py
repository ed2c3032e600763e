import h5py
import numpy as np
import pytest

from conta_core.store import MapReader, MapWriter, ShardedReader, StoreError


def test_round_trip_random_access_and_provenance(tmp_path):
    path = tmp_path / "cam.h5"
    rng = np.random.default_rng(0)
    arrays = {f"img_{i}": rng.random((2, 7, 9)).astype(np.float16) for i in range(5)}
    with MapWriter(path, kind="cam", attrs={"round": 1, "class_names": ["bg", "a", "b"]}) as w:
        for image_id, a in arrays.items():
            w.put(image_id, a, classes=[1, 2])
    with MapReader(path, kind="cam", expect={"round": 1, "class_names": ["bg", "a", "b"]}) as r:
        assert sorted(r.ids()) == sorted(arrays)
        np.testing.assert_array_equal(r.get("img_3"), arrays["img_3"])
        assert r.item_attrs("img_3")["classes"] == [1, 2]
        assert r.attrs["class_names"] == ["bg", "a", "b"]
        assert r.attrs["complete"]
    with h5py.File(path) as f:  # one LZ4-encoded byte string per image, located by the index
        assert f.attrs["codec"] == "lz4" and f["items/img_0"].dtype == np.uint8 and f["items/img_0"].ndim == 1
        assert f["index"].dtype == np.uint8


def test_quantised_maps_and_every_codec(tmp_path):
    rng = np.random.default_rng(1)
    cam = rng.random((3, 11, 13)).astype(np.float32)
    cam[0, 0, 0], cam[1, 0, 0] = 0.0, 1.0
    mask = rng.integers(0, 21, (11, 13), dtype=np.uint8)
    for codec in ("lz4", "lz4hc", "zlib1", "raw"):
        path = tmp_path / f"{codec}.h5"
        with MapWriter(path, kind="cam", codec=codec, quantize=255) as w:
            w.put("a", cam)
            w.put("empty", np.zeros((0, 11, 13), np.float32))
        with MapWriter(tmp_path / f"m-{codec}.h5", kind="m", codec=codec) as w:
            w.put("a", mask)
            w.put("f", cam)
        with MapReader(path) as r:
            got = r.get("a")
            assert got.dtype == np.float32 and got.flags.writeable and r.get("empty").shape == (0, 11, 13)
            # 255 levels: the nearest level, 0 and 1 exactly
            np.testing.assert_array_equal(got, np.rint(cam * 255).astype(np.uint8).astype(np.float32) / 255)
            assert np.abs(got - cam).max() <= 0.5 / 255 + 1e-7 and got[0, 0, 0] == 0.0 and got[1, 0, 0] == 1.0
        with MapReader(tmp_path / f"m-{codec}.h5") as r:
            np.testing.assert_array_equal(r.get("a"), mask)
            np.testing.assert_array_equal(r.get("f"), cam)  # lossless without quantize
    with pytest.raises(StoreError, match="'bad'.*quantisation"):
        with MapWriter(tmp_path / "bad.h5", kind="cam", quantize=255) as w:
            w.put("bad", np.array([0.5, 1.5], np.float32))


def test_failed_write_leaves_no_file(tmp_path):
    path = tmp_path / "x.h5"
    with pytest.raises(RuntimeError):
        with MapWriter(path, kind="cam") as w:
            w.put("a", np.zeros((3, 3)))
            raise RuntimeError("killed")
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_stale_foreign_and_incomplete_files_are_rejected(tmp_path):
    path = tmp_path / "x.h5"
    with MapWriter(path, kind="cam", attrs={"round": 0}) as w:
        w.put("a", np.zeros((3, 3)))
    with pytest.raises(StoreError, match="kind"):
        MapReader(path, kind="pseudo_mask")
    with pytest.raises(StoreError, match="round"):
        MapReader(path, expect={"round": 1})
    with h5py.File(path, "a") as f:
        f.attrs["complete"] = False
    with pytest.raises(StoreError, match="incomplete"):
        MapReader(path)
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(StoreError, match="junk.h5"):
        MapReader(tmp_path / "junk.h5")


def test_ids_with_slashes_and_sharded_reader(tmp_path):
    for k, ids in enumerate([["a/1", "b"], ["c"]]):
        with MapWriter(tmp_path / f"s{k}.h5", kind="m") as w:
            for i in ids:
                w.put(i, np.full((2, 2), ord(i[0]), np.uint8))
    with ShardedReader([tmp_path / "s0.h5", tmp_path / "s1.h5"], kind="m") as r:
        assert sorted(r.ids()) == ["a/1", "b", "c"]
        assert r.get("c")[0, 0] == ord("c")
        assert "a/1" in r and "zz" not in r
        with pytest.raises(StoreError, match="zz"):
            r.get("zz")


# --- resumable writes (<target>.partial journal) -------------------------------------------

import logging
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from conta_core.store import partial_ids

REPO = Path(__file__).resolve().parents[1]


def _item(k: int) -> np.ndarray:
    return np.random.default_rng(k).random((3, 17, 11)).astype(np.float16)


def _interrupted(path: Path, ids: list[str], attrs: dict | None = None) -> None:
    """Write ``ids`` and stop as Ctrl-C would: the journal stays for a restart."""
    with pytest.raises(KeyboardInterrupt):
        with MapWriter(path, kind="cam", attrs=attrs or {"round": 0}) as w:
            for i in ids:
                w.put(i, _item(int(i)), classes=[int(i)])
            raise KeyboardInterrupt


def test_interrupted_writer_resumes_and_keeps_complete_items(tmp_path, caplog):
    path = tmp_path / "cam.h5"
    _interrupted(path, ["0", "1", "2"])
    assert not path.exists() and partial_ids(path) == ["0", "1", "2"]
    with caplog.at_level(logging.INFO, logger="conta_core.store"):
        with MapWriter(path, kind="cam", attrs={"round": 0}) as w:
            assert w.recovered == 3 and "1" in w and "3" not in w
            for i in ["3", "4"]:
                w.put(i, _item(int(i)), classes=[int(i)])
    assert "with 3 complete item(s)" in caplog.text
    assert not (tmp_path / "cam.h5.partial").exists()
    with MapReader(path, kind="cam", expect={"round": 0}) as r:
        assert sorted(r.ids()) == ["0", "1", "2", "3", "4"]
        for i in r.ids():
            np.testing.assert_array_equal(r.get(i), _item(int(i)))
            assert r.item_attrs(i)["classes"] == [int(i)]
        assert r.attrs["num_items"] == 5


def test_torn_last_record_is_cut_off(tmp_path):
    path = tmp_path / "cam.h5"
    _interrupted(path, ["0", "1", "2"])
    partial = tmp_path / "cam.h5.partial"
    with open(partial, "r+b") as f:  # a kill in the middle of writing item 2
        f.truncate(partial.stat().st_size - 7)
    assert partial_ids(path) == ["0", "1"]
    with MapWriter(path, kind="cam", attrs={"round": 0}) as w:
        assert w.recovered == 2 and "2" not in w
        w.put("2", _item(2), classes=[2])
    with MapReader(path) as r:
        np.testing.assert_array_equal(r.get("2"), _item(2))
        assert len(r) == 3


@pytest.mark.parametrize("damage", ["foreign", "other_kind", "garbage", "torn_header", "bit_flip"])
def test_foreign_or_damaged_journal_is_rebuilt(tmp_path, damage):
    path = tmp_path / "cam.h5"
    partial = tmp_path / "cam.h5.partial"
    _interrupted(path, ["0", "1"])
    attrs, kind = {"round": 0}, "cam"
    if damage == "foreign":
        attrs = {"round": 1}  # e.g. another round's or configuration's shard
    elif damage == "other_kind":
        kind = "pseudo_mask"
    elif damage == "garbage":
        partial.write_bytes(b"\x00" * 100)
    elif damage == "torn_header":
        partial.write_bytes(partial.read_bytes()[:30])
    elif damage == "bit_flip":  # item 1's payload: item 0 stays, item 1 is dropped
        data = bytearray(partial.read_bytes())
        data[-3] ^= 0xFF
        partial.write_bytes(bytes(data))
    with MapWriter(path, kind=kind, attrs=attrs) as w:
        assert w.recovered == (1 if damage == "bit_flip" else 0)
        for i in ["0", "1"]:
            if i not in w:
                w.put(i, _item(int(i)))
    with MapReader(path, kind=kind, expect=attrs) as r:
        assert sorted(r.ids()) == ["0", "1"]
        np.testing.assert_array_equal(r.get("1"), _item(1))


def test_resume_false_and_a_repeated_put(tmp_path):
    path = tmp_path / "cam.h5"
    _interrupted(path, ["0"])
    with MapWriter(path, kind="cam", attrs={"round": 0}, resume=False) as w:
        assert w.recovered == 0 and "0" not in w
        w.put("1", _item(1))
    _interrupted(path, ["0"])
    with MapWriter(path, kind="cam", attrs={"round": 0}) as w:  # a writer that ignores `in`
        w.put("0", np.zeros((2, 2), np.float16))  # rewriting a recovered item: the newest wins
        with pytest.raises(StoreError, match="twice"):
            w.put("0", _item(0))
    with MapReader(path) as r:
        assert r.ids() == ["0"] and not r.get("0").any()


# Writes items 0..99 one by one, slowly; the test kills it with SIGKILL.
KILLED_WRITER = textwrap.dedent("""
    import sys, time
    import numpy as np
    from conta_core.store import MapWriter
    with MapWriter(sys.argv[1], kind="cam", attrs={"round": 0}) as w:
        for k in range(100):
            w.put(str(k), np.random.default_rng(k).random((3, 17, 11)).astype(np.float16), classes=[k])
            time.sleep(0.02)
""")


def test_kill_9_mid_shard_keeps_the_written_items(tmp_path):
    path = tmp_path / "cam.h5"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path)], cwd=REPO,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        deadline = time.monotonic() + 60
        while len(partial_ids(path)) < 10:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    kept = partial_ids(path)
    assert 10 <= len(kept) < 100 and kept == [str(k) for k in range(len(kept))]
    with MapWriter(path, kind="cam", attrs={"round": 0}) as w:
        assert w.recovered == len(kept)
        for k in range(100):
            if str(k) not in w:
                w.put(str(k), _item(k), classes=[k])
    with MapReader(path) as r:
        assert len(r) == 100
        for k in (0, len(kept) - 1, len(kept), 99):
            np.testing.assert_array_equal(r.get(str(k)), _item(k))


# Holds the journal of a shard (as an orphan of a killed run might) for a while, then finishes.
HOLDER = textwrap.dedent("""
    import sys, time
    import numpy as np
    from conta_core.store import MapWriter
    with MapWriter(sys.argv[1], kind="cam", attrs={"round": 0}) as w:
        w.put("a", np.ones((2, 2)))
        open(sys.argv[2], "w").close()
        time.sleep(1.5)
""")


def test_second_writer_waits_for_the_first(tmp_path):
    path, ready = tmp_path / "cam.h5", tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), str(ready)], cwd=REPO,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        start = time.monotonic()
        with MapWriter(path, kind="cam", attrs={"round": 0}) as w:
            waited = time.monotonic() - start
            assert path.exists()  # it went on only after the holder had finished its file...
            assert w.recovered == 0  # ...and removed its journal
            w.put("b", np.zeros((2, 2)))
        assert waited > 0.5
    finally:
        proc.kill()
        proc.wait()
    with MapReader(path) as r:
        assert r.ids() == ["b"]


def test_readers_pickle_by_path(tmp_path):
    for k in range(2):
        with MapWriter(tmp_path / f"s{k}.h5", kind="m", attrs={"round": 2}) as w:
            w.put(f"id{k}", np.full((2, 2), k), extra=np.arange(3))
    single = MapReader(tmp_path / "s0.h5", kind="m", expect={"round": 2})
    sharded = ShardedReader([tmp_path / "s0.h5", tmp_path / "s1.h5"], kind="m")
    for reader in (single, sharded):
        copy = pickle.loads(pickle.dumps(reader))
        assert sorted(copy.ids()) == sorted(reader.ids())
        assert copy.get("id0")[0, 0] == 0
        np.testing.assert_array_equal(copy.item_attrs("id0")["extra"], np.arange(3))
        copy.close()
        reader.close()


# --- damaged finished files (issue 10, item 6): detected, deleted, named --------------------

from conta_core.integrity import DamagedArtifact  # noqa: E402
from conta_core.store import DamagedStoreFile  # noqa: E402


def _cam_file(path, n=6, size=40):
    rng = np.random.default_rng(0)
    arrays = {f"img_{i}": rng.random((2, size, size)).astype(np.float16) for i in range(n)}
    with MapWriter(path, kind="cam", attrs={"round": 0}) as w:
        for image_id, a in arrays.items():
            w.put(image_id, a, classes=[1, 2])
        w.put_array("confounder", rng.random((3, 4, 4)).astype(np.float32))
    return arrays


def _read_all(path, **kwargs):
    with MapReader(path, kind="cam", **kwargs) as r:
        for image_id in r.ids():
            r.get(image_id)
            r.item_attrs(image_id)
        r.array("confounder")


def _assert_deleted_and_named(err, path):
    message = str(err.value)
    assert isinstance(err.value, DamagedArtifact) and isinstance(err.value, StoreError)
    assert str(path) in message and "damaged" in message
    assert "deleted" in message and "rerun the same command" in message
    assert not path.exists()


def test_intact_file_passes_every_check(tmp_path):
    path = tmp_path / "cam.h5"
    arrays = _cam_file(path)
    _read_all(path)
    with MapReader(path) as r:
        np.testing.assert_array_equal(r.get("img_2"), arrays["img_2"])
        assert r.item_attrs("img_2") == {"classes": [1, 2]}  # the checksums are not attributes to callers
    assert path.exists()


def test_truncated_file_is_deleted_with_a_rerun_hint(tmp_path):
    path = tmp_path / "cam.h5"
    _cam_file(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DamagedStoreFile, match="truncated") as err:
        MapReader(path, kind="cam")
    _assert_deleted_and_named(err, path)


def _content(path):
    with MapReader(path, remove_damaged=False) as r:
        return ({i: (r.get(i).tobytes(), r.item_attrs(i)) for i in r.ids()},
                r.array("confounder").tobytes(), {k: v for k, v in r.attrs.items()})


@pytest.mark.parametrize("where", [i / 20 for i in range(1, 20)])
def test_flipped_bytes_are_detected_or_provably_harmless(tmp_path, where):
    """64 bytes flipped anywhere: the reader raises (and deletes the file), or the bytes were
    unused (B-tree slack, free space) and every value reads exactly as written."""
    path = tmp_path / "cam.h5"
    _cam_file(path)
    original = _content(path)
    raw = bytearray(path.read_bytes())
    at = int(len(raw) * where)
    raw[at:at + 64] = bytes(b ^ 0xFF for b in raw[at:at + 64])
    path.write_bytes(bytes(raw))
    try:
        _read_all(path)
    except DamagedStoreFile as err:
        assert str(path) in str(err) and "deleted" in str(err) and not path.exists()
    else:
        assert _content(path) == original, "damaged bytes were read as valid"


@pytest.mark.parametrize("what", ["item", "item_attr", "array", "root_attr"])
def test_values_rewritten_in_place_fail_their_checksum(tmp_path, what):
    """Valid HDF5, different numbers: HDF5 checks nothing here, only the stored CRCs see it."""
    path = tmp_path / "cam.h5"
    _cam_file(path)
    with h5py.File(path, "r+") as f:
        if what == "item":
            _flip_byte(f["items/img_3"], 5)
        elif what == "item_attr":  # the item's entry in the index says other classes
            raw = f["index"][()].tobytes()
            at = raw.index(b'"img_3"')
            at = raw.index(b'"classes": [1, 2]', at)
            f["index"][at:at + 17] = np.frombuffer(b'"classes": [1, 3]', np.uint8)
        elif what == "array":
            f["confounder"][0, 0, 0] = 7.0
        else:
            f.attrs["round"] = 1
    with pytest.raises(DamagedStoreFile, match="checksum") as err:
        _read_all(path)
    _assert_deleted_and_named(err, path)


def _flip_byte(dataset, at: int) -> None:
    """One stored byte of an item changed through HDF5 (the bytes stay where they were)."""
    dataset[at] = dataset[at] ^ 0xFF


def test_item_rewritten_elsewhere_is_caught_by_check_layout(tmp_path):
    """An item deleted and written anew through HDF5 lands at other bytes: reads still see the
    indexed (old, intact) bytes, so check_layout (python -m conta_core.verify) finds it."""
    path = tmp_path / "cam.h5"
    _cam_file(path)
    with h5py.File(path, "r+") as f:
        blob = f["items/img_3"][()]
        del f["items/img_3"]
        f.create_dataset("items/img_3", data=np.concatenate([blob, blob]))  # too big for the old place
    with MapReader(path, remove_damaged=False) as r:
        r.get("img_3")
        with pytest.raises(DamagedStoreFile, match="'img_3' is not where the index says"):
            r.check_layout()
    other = tmp_path / "other.h5"
    _cam_file(other)
    with MapReader(other) as r:
        r.check_layout()


def test_file_of_the_first_format_is_still_read(tmp_path):
    """conta-maps/1 (items as natural HDF5 datasets, checksums in their attributes) stays
    readable, so results of an older conta-core are not rebuilt for the format alone."""
    from conta_core.store import _crc_attrs
    from conta_core.store_v1 import crc_item

    path = tmp_path / "v1.h5"
    cam = np.arange(24, dtype=np.float16).reshape(2, 3, 4)
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("items/img|1", data=cam, chunks=True, compression="gzip", shuffle=True)
        ds.attrs["classes"] = "json:[1, 2]"
        ds.attrs["attrs_crc32"] = _crc_attrs(ds.attrs, ("crc32", "attrs_crc32"))
        ds.attrs["crc32"] = crc_item("img/1", cam)
        f.attrs.update({"format": "conta-maps/1", "kind": "cam", "complete": True, "checksum": "crc32/1",
                        "arrays_crc32": "json:{}", "num_items": 1})
        f.attrs["root_crc32"] = _crc_attrs(f.attrs, ("root_crc32",))
    with MapReader(path, kind="cam") as r:
        assert r.ids() == ["img/1"] and "img/1" in r and "x" not in r and len(r) == 1
        np.testing.assert_array_equal(r.get("img/1"), cam)
        assert r.item_attrs("img/1") == {"classes": [1, 2]}
        r.check_layout()
        with pytest.raises(StoreError, match="'x'"):
            r.get("x")
    with h5py.File(path, "r+") as f:
        f["items/img|1"][0, 0, 0] = 5
    with pytest.raises(DamagedStoreFile, match="'img/1' fails its checksum"):
        MapReader(path).get("img/1")


def test_file_without_checksums_is_unverifiable(tmp_path):
    path = tmp_path / "cam.h5"
    _cam_file(path)
    with h5py.File(path, "r+") as f:  # what conta-core wrote before checksums existed
        for name in ("checksum", "root_crc32", "arrays_crc32"):
            del f.attrs[name]
    with pytest.raises(DamagedStoreFile, match="cannot be verified"):
        MapReader(path)


def test_remove_damaged_false_keeps_the_file_and_other_errors_delete_nothing(tmp_path):
    path = tmp_path / "cam.h5"
    _cam_file(path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DamagedStoreFile, match="left in place"):
        MapReader(path, remove_damaged=False)
    assert path.exists()
    folder = tmp_path / "shard0.h5"
    folder.mkdir()
    with pytest.raises(StoreError) as err:
        MapReader(folder)
    assert not isinstance(err.value, DamagedArtifact) and folder.is_dir()
    intact = tmp_path / "other.h5"
    _cam_file(intact)
    with pytest.raises(StoreError) as err:  # foreign or stale: reported, never deleted as damaged
        MapReader(intact, kind="pseudo_mask", expect={"round": 3})
    assert not isinstance(err.value, DamagedArtifact) and intact.exists()


def test_damaged_shard_is_named_by_the_sharded_reader(tmp_path):
    good, bad = tmp_path / "s0.h5", tmp_path / "s1.h5"
    for path in (good, bad):
        with MapWriter(path, kind="m") as w:
            w.put(path.stem, np.arange(100, dtype=np.uint8).reshape(10, 10))
    with h5py.File(bad, "r+") as f:
        _flip_byte(f[f"items/{bad.stem}"], 0)
    with ShardedReader([good, bad], kind="m") as r:
        assert r.get("s0")[0, 0] == 0
        with pytest.raises(DamagedStoreFile, match="s1.h5") as err:
            r.get("s1")
    _assert_deleted_and_named(err, bad)
    assert good.exists()


def test_verify_command_checks_a_results_folder(tmp_path, capsys):
    """python -m conta_core.verify: every file read in full, damaged ones deleted, others kept."""
    import torch

    from conta_core.checkpoint import save_model_file
    from conta_core.verify import main

    run = tmp_path / "results" / "x"
    (run / "round0" / "cam").mkdir(parents=True)
    good, rewritten, truncated = (run / "round0" / "cam" / f"shard{k}.h5" for k in range(3))
    for path in (good, rewritten, truncated):
        _cam_file(path, n=3, size=8)
    with h5py.File(rewritten, "r+") as f:
        _flip_byte(f["items/img_1"], 0)
    truncated.write_bytes(truncated.read_bytes()[:500])
    model, bad_model = run / "round0" / "classifier.pt", run / "round0" / "segmenter.pt"
    for path in (model, bad_model):
        save_model_file(path, {"model": {"w": torch.arange(4096.0)}, "meta": {}})
    state = torch.load(bad_model, weights_only=True)
    state["model"]["w"][7] = -1.0
    torch.save(state, bad_model)
    with h5py.File(run / "foreign.h5", "w") as f:
        f.attrs["format"] = "someone-else/1"

    assert main([str(tmp_path / "results"), "--keep"]) == 1
    assert rewritten.exists() and truncated.exists() and bad_model.exists()
    assert main([str(tmp_path / "results")]) == 1
    out = capsys.readouterr().out
    assert f"damaged  {rewritten}: item 'img_1' fails its checksum; deleted" in out
    assert f"damaged  {bad_model}: model file: checksum mismatch" in out
    assert "6 file(s) checked: 3 damaged, 1 skipped" in out
    assert not rewritten.exists() and not truncated.exists() and not bad_model.exists()
    assert good.exists() and model.exists() and (run / "foreign.h5").exists()
    assert main([str(tmp_path / "results")]) == 0
