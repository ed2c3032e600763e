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
    with h5py.File(path) as f:  # chunked and compressed per image
        assert f["items/img_0"].compression == "gzip"


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
