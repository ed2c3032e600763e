"""Building, validating and reading the dataset index (VOC layout, synthetic, voc_mini)."""
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conta_core.data.index import DatasetError, DatasetIndex, build_index
from conta_core.data.palette import save_index_png
from conta_core.data.synthetic import CLASSES, DEFAULT_PARAMS, generate_synthetic
from conta_core.store import MapWriter

VOC_CLASSES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
               "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor"]
VOC_MINI = Path(__file__).resolve().parents[2] / "shared/data/voc_mini"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pristine") / "syn"
    generate_synthetic(root, **dict(DEFAULT_PARAMS, num_train=12, num_val=6))
    return root


@pytest.fixture
def root(pristine, tmp_path) -> Path:
    """A private copy of the synthetic dataset each test may damage."""
    return Path(shutil.copytree(pristine, tmp_path / "data"))


def cfg(root: Path, **extra) -> dict:
    return dict({"kind": "synthetic", "root": str(root),
                 "splits": {"train": "train.txt", "val": "val.txt"}, "train_split": "train",
                 "on_bad_item": "error"}, **extra)


def build(root: Path, tmp_path: Path, **extra) -> DatasetIndex:
    return build_index(cfg(root, **extra), tmp_path / "index")


def build_error(root: Path, tmp_path: Path, **extra) -> str:
    with pytest.raises(DatasetError) as info:
        build(root, tmp_path, **extra)
    assert not (tmp_path / "index" / "index.csv").exists()
    return str(info.value)


def test_index_matches_masks_and_list_files(root, tmp_path):
    index = build(root, tmp_path)
    assert index.classes == CLASSES and index.void == 255 and index.num_classes == 6
    assert index.splits() == ["train", "val"]
    train_list = (root / "ImageSets/Segmentation/train.txt").read_text().split()
    assert index.ids("train") == train_list and len(index.ids("val")) == 6
    image_labels = json.loads((root / "image_labels.json").read_text())
    for image_id in index.ids("train") + index.ids("val"):
        mask = index.read_mask(image_id)
        raw = np.asarray(Image.open(root / "SegmentationClass" / f"{image_id}.png"))
        assert mask.dtype == np.uint8 and np.array_equal(mask, raw)
        assert 255 in mask
        derived = sorted(set(np.unique(mask).tolist()) - {0, 255})
        assert index.labels(image_id) == derived
        assert [CLASSES[c] for c in derived] == image_labels[image_id]
        image = index.read_image(image_id)
        assert image.dtype == np.uint8 and image.shape == (96, 96, 3)
        assert index.size(image_id) == (96, 96) and index.has_mask(image_id)
    rows = list(csv.DictReader(open(tmp_path / "index" / "index.csv")))
    assert list(rows[0]) == ["split", "id", "labels", "height", "width", "image", "mask"]
    assert Path(rows[0]["image"]).is_absolute()
    report = (tmp_path / "index" / "report.md").read_text()
    horses = sum(1 in index.labels(i) for i in index.ids("train"))
    assert f"| horse | {horses} |" in report and "| train | 12 | 12 |" in report


def test_load_round_trip_and_unknown_split(root, tmp_path):
    build(root, tmp_path)
    index = DatasetIndex.load(tmp_path / "index")
    assert index.ids("val")[0] == "val_0000"
    with pytest.raises(DatasetError, match=r"'test'.*\['train', 'val'\]"):
        index.ids("test")
    with pytest.raises(DatasetError, match="nope"):
        index.labels("nope")
    with pytest.raises(DatasetError, match="missing"):
        DatasetIndex.load(tmp_path / "elsewhere")


def test_missing_image_named_in_list(root, tmp_path):
    (root / "JPEGImages/train_0003.jpg").unlink()
    message = build_error(root, tmp_path)
    assert "'train_0003'" in message and str(root / "JPEGImages/train_0003.jpg") in message
    assert "missing" in message


def test_truncated_jpeg_is_caught(root, tmp_path):
    path = root / "JPEGImages/val_0001.jpg"
    path.write_bytes(path.read_bytes()[:600])
    message = build_error(root, tmp_path)
    assert "'val_0001'" in message and str(path) in message and "cannot be decoded" in message


def test_missing_mask(root, tmp_path):
    path = root / "SegmentationClass/train_0005.png"
    path.unlink()
    message = build_error(root, tmp_path)
    assert "'train_0005'" in message and str(path) in message and "mask file is missing" in message


def test_mask_size_mismatch(root, tmp_path):
    path = root / "SegmentationClass/train_0002.png"
    save_index_png(path, np.ones((50, 60), np.uint8))
    message = build_error(root, tmp_path)
    assert "'train_0002'" in message and str(path) in message and "60x50" in message


def test_mask_value_outside_classes(root, tmp_path):
    path = root / "SegmentationClass/train_0004.png"
    mask = np.asarray(Image.open(path)).copy()
    mask[:3, :3] = 9
    save_index_png(path, mask)
    message = build_error(root, tmp_path)
    assert "'train_0004'" in message and str(path) in message and "[9]" in message


def test_rgb_mask_is_rejected(root, tmp_path):
    path = root / "SegmentationClass/train_0001.png"
    Image.open(path).convert("RGB").save(path)
    message = build_error(root, tmp_path)
    assert "'train_0001'" in message and "'RGB'" in message


def test_no_label_only_matters_in_train_split(root, tmp_path):
    empty = np.zeros((96, 96), np.uint8)
    empty[:2] = 255
    save_index_png(root / "SegmentationClass/train_0006.png", empty)
    save_index_png(root / "SegmentationClass/val_0002.png", empty)
    message = build_error(root, tmp_path)
    assert "'train_0006'" in message and "no foreground label" in message
    assert "val_0002" not in message


def test_duplicate_id_in_split(root, tmp_path):
    listing = root / "ImageSets/Segmentation/train.txt"
    listing.write_text(listing.read_text() + "train_0000\n")
    message = build_error(root, tmp_path)
    assert "'train_0000'" in message and "listed 2 times" in message and str(listing) in message


def test_all_problems_reported_at_once(root, tmp_path):
    (root / "JPEGImages/train_0003.jpg").unlink()
    (root / "SegmentationClass/val_0004.png").unlink()
    listing = root / "ImageSets/Segmentation/train.txt"
    listing.write_text(listing.read_text() + "ghost\n")
    message = build_error(root, tmp_path)
    assert "3 problems" in message
    assert all(name in message for name in ("'train_0003'", "'val_0004'", "'ghost'"))


def test_skip_drops_bad_items_and_reports_them(root, tmp_path):
    (root / "JPEGImages/train_0003.jpg").unlink()
    save_index_png(root / "SegmentationClass/train_0006.png", np.zeros((96, 96), np.uint8))
    listing = root / "ImageSets/Segmentation/val.txt"
    listing.write_text(listing.read_text() + "val_0000\n")
    with pytest.warns(UserWarning, match="skipped 3 bad item"):
        index = build(root, tmp_path, on_bad_item="skip", max_skip_fraction=0.2)
    assert index.ids("train") == [f"train_{i:04d}" for i in range(12) if i not in (3, 6)]
    assert index.ids("val") == [f"val_{i:04d}" for i in range(6)]
    report = (tmp_path / "index/report.md").read_text()
    assert "Skipped items (3)" in report
    assert "'train_0003'" in report and "'train_0006'" in report and "listed 2 times" in report


def test_class_list_mismatch_is_structural(root, tmp_path):
    wrong = CLASSES[:-1] + ["truck"]
    message = build_error(root, tmp_path, classes=wrong, on_bad_item="skip")
    assert "truck" in message and str(root / "classes.json") in message


def test_void_mismatch_with_config_is_structural(root, tmp_path):
    message = build_error(root, tmp_path, void=254, on_bad_item="skip")
    assert "void 254" in message


def test_classes_json_void_not_matching_masks(root, tmp_path):
    meta = json.loads((root / "classes.json").read_text())
    meta["void"] = 250
    (root / "classes.json").write_text(json.dumps(meta))
    message = build_error(root, tmp_path, on_bad_item="skip")
    assert "18 of 18 masks hold values beyond the class list - 255 (18 masks)" in message
    assert "void 250 never occurs while 255 is in 18 masks" in message


def test_missing_list_file_is_structural(root, tmp_path):
    message = build_error(root, tmp_path, splits={"train": "train.txt", "test": "test.txt"},
                          on_bad_item="skip")
    assert str(root / "ImageSets/Segmentation/test.txt") in message and "'test'" in message


def test_read_mask_from_hdf5(root, tmp_path):
    build(root, tmp_path)
    masks = tmp_path / "masks.h5"
    stored = np.arange(96 * 96, dtype=np.uint8).reshape(96, 96)
    with MapWriter(masks, kind="gt_mask") as writer:
        writer.put("train_0000", stored)
    index_path = tmp_path / "index/index.csv"
    rows = list(csv.reader(open(index_path)))
    rows[1][6] = f"h5:{masks}"
    with open(index_path, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    index = DatasetIndex.load(tmp_path / "index")
    assert np.array_equal(index.read_mask("train_0000"), stored)


def test_voc_mini_labels_and_void(tmp_path):
    if not VOC_MINI.is_dir():
        pytest.skip(f"{VOC_MINI} is not available")
    index = build_index({"kind": "voc_layout", "root": str(VOC_MINI), "classes": VOC_CLASSES,
                         "splits": {"all": "all.txt"}, "train_split": "all"}, tmp_path / "index")
    expected = json.loads((VOC_MINI / "image_labels.json").read_text())
    ids = index.ids("all")
    assert len(ids) == 18 and set(ids) == set(expected)
    for image_id in ids:
        assert [VOC_CLASSES[c] for c in index.labels(image_id)] == sorted(
            expected[image_id], key=VOC_CLASSES.index)
        mask = index.read_mask(image_id)
        assert mask.shape == index.size(image_id) == index.read_image(image_id).shape[:2]
    assert index.size("2007_000129") == (500, 334)
    assert 255 in index.read_mask("2007_000129")
    assert set(np.unique(index.read_mask("2011_000006")).tolist()) == {0, 9, 15, 18, 255}
    assert index.palette[15] == [192, 128, 128]
