"""VOC 2012 + SBD and COCO 2014 readers on small fake trees in the real formats."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from scipy.io import savemat

from conta_core.data.coco import (annotation_file, check_mask_shards, planned_shard_ids,
                                  render_coco_masks, shard_file)
from conta_core.data.index import DatasetError, DatasetIndex, build_index
from conta_core.data.palette import save_index_png
from conta_core.data.voc import VOC_CLASSES
from conta_core.store import MapReader

H, W = 30, 40
PERSON, DOG, CAR, HORSE = (VOC_CLASSES.index(n) for n in ("person", "dog", "car", "horse"))


# ------------------------------------------------------------------ fake VOC + SBD


def jpeg(path: Path, size=(W, H), seed=0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


def block_mask(cls: int, void_border=True) -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    mask[5:20, 8:30] = cls
    if void_border:
        mask[4, 7:31] = 255
    return mask


def xml(path: Path, objects: list[tuple[str, int]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(
        f"<object><name>{name}</name><difficult>{difficult}</difficult>"
        "<part><name>head</name></part></object>" for name, difficult in objects)
    path.write_text(f"<annotation><filename>x.jpg</filename>{body}</annotation>")


def sbd_mat(path: Path, segmentation: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    present = np.unique(segmentation[segmentation > 0]).astype(np.uint8)
    savemat(path, {"GTcls": {"Segmentation": segmentation, "Boundaries": np.zeros((1, 1)),
                             "CategoriesPresent": present}})


VOC_TRAIN, VOC_VAL = ["a1", "a2", "a3"], ["v1", "v2"]
SBD_TRAIN, SBD_VAL = ["s1", "s2", "a1", "v1"], ["s3", "a2"]
MASK_CLASS = {"a1": PERSON, "a2": DOG, "a3": CAR, "v1": HORSE, "v2": PERSON, "s1": DOG, "s3": CAR}


@pytest.fixture
def voc(tmp_path) -> tuple[Path, Path]:
    """(VOCdevkit folder, benchmark_RELEASE folder)."""
    devkit = tmp_path / "VOCdevkit"
    voc = devkit / "VOC2012"
    lists = voc / "ImageSets/Segmentation"
    lists.mkdir(parents=True)
    (voc / "SegmentationClass").mkdir()
    (lists / "train.txt").write_text("\n".join(VOC_TRAIN) + "\n")
    (lists / "val.txt").write_text("\n".join(VOC_VAL) + "\n")
    sbd = tmp_path / "benchmark_RELEASE" / "dataset"
    sbd.mkdir(parents=True)
    (sbd / "train.txt").write_text("\n".join(SBD_TRAIN) + "\n")
    (sbd / "val.txt").write_text("\n".join(SBD_VAL) + "\n")
    for i, image_id in enumerate(VOC_TRAIN + VOC_VAL + ["s1", "s2"]):
        jpeg(voc / "JPEGImages" / f"{image_id}.jpg", seed=i)
    jpeg(sbd / "img/s3.jpg", seed=9)  # only in SBD's own image folder
    for image_id in VOC_TRAIN + VOC_VAL:
        save_index_png(voc / "SegmentationClass" / f"{image_id}.png", block_mask(MASK_CLASS[image_id]))
    for image_id in ("s1", "s3", "a1", "v1"):  # s2 has no .mat: labels from its XML
        sbd_mat(sbd / "cls" / f"{image_id}.mat", block_mask(MASK_CLASS[image_id], void_border=False))
    for image_id in VOC_TRAIN + VOC_VAL + ["s1", "s3"]:
        xml(voc / "Annotations" / f"{image_id}.xml", [(VOC_CLASSES[MASK_CLASS[image_id]], 0)])
    xml(voc / "Annotations/s2.xml", [("cat", 0), ("sheep", 1), ("cat", 0)])
    return devkit, sbd.parent


def tree(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def voc_cfg(devkit: Path, sbd: Path | None, **extra) -> dict:
    cfg = {"kind": "voc12", "root": str(devkit), "train_split": "train_aug", "on_bad_item": "error"}
    if sbd is not None:
        cfg["sbd_root"] = str(sbd)
    return dict(cfg, **extra)


def test_voc12_splits_labels_and_sbd_masks(voc, tmp_path):
    devkit, sbd = voc
    before = tree(devkit), tree(sbd)
    index = build_index(voc_cfg(devkit, sbd), tmp_path / "index")
    assert (tree(devkit), tree(sbd)) == before  # the dataset is never written to
    # train_aug = SBD train + SBD val + VOC train - VOC val
    assert index.ids("train_aug") == ["a1", "a2", "a3", "s1", "s2", "s3"]
    assert index.ids("train") == VOC_TRAIN and index.ids("val") == VOC_VAL
    assert index.splits() == ["train_aug", "train", "val"]
    assert index.classes == VOC_CLASSES and index.void == 255
    for image_id, cls in MASK_CLASS.items():
        assert index.labels(image_id) == [cls]
    assert index.labels("s2") == [VOC_CLASSES.index("cat"), VOC_CLASSES.index("sheep")]
    assert not index.has_mask("s2")
    # VOC's own PNG wins over SBD's .mat (a1 has both); SBD-only masks come from HDF5.
    assert index.read_mask("a1")[4, 10] == 255
    s1 = index.read_mask("s1")
    assert s1.dtype == np.uint8 and np.array_equal(s1, block_mask(DOG, void_border=False))
    assert index.image_path("s3") == (sbd / "dataset/img/s3.jpg").resolve()
    with MapReader(tmp_path / "index/sbd_masks.h5", kind="gt_mask") as reader:
        assert sorted(reader.ids()) == ["s1", "s3"]
    assert "| train_aug | 6 | 5 |" in (tmp_path / "index/report.md").read_text()


def test_voc12_xml_labels_on_request(voc, tmp_path):
    devkit, sbd = voc
    xml(devkit / "VOC2012/Annotations/a3.xml", [("car", 0), ("bottle", 1)])
    index = build_index(voc_cfg(devkit, sbd, label_source="xml"), tmp_path / "index")
    assert index.labels("a3") == [VOC_CLASSES.index("bottle"), CAR]
    assert index.has_mask("a3")


def test_voc12_from_segmentation_class_aug(voc, tmp_path):
    devkit, _ = voc
    aug = devkit / "VOC2012/SegmentationClassAug"
    aug.mkdir()
    for image_id in ("s1", "v2", "a1"):
        save_index_png(aug / f"{image_id}.png", block_mask(MASK_CLASS[image_id], void_border=False))
    index = build_index(voc_cfg(devkit, None), tmp_path / "index")
    assert index.ids("train_aug") == ["a1", "a2", "a3", "s1"]
    assert index.labels("s1") == [DOG]
    assert index.read_mask("a1")[4, 10] == 255  # the official mask still wins


def test_voc12_without_sbd_has_no_train_aug(voc, tmp_path):
    devkit, _ = voc
    with pytest.raises(DatasetError, match="train_split 'train_aug' is not one of the splits") as info:
        build_index(voc_cfg(devkit, None), tmp_path / "index")
    assert "give dataset.sbd_root or dataset.aug_masks" in str(info.value)
    index = build_index(voc_cfg(devkit, None, train_split="train"), tmp_path / "index")
    assert index.splits() == ["train", "val"]


def test_voc12_validation_errors(voc, tmp_path):
    devkit, sbd = voc
    voc_root = devkit / "VOC2012"
    (voc_root / "SegmentationClass/v2.png").unlink()
    (sbd / "dataset/cls/s1.mat").write_bytes(b"not a mat file")
    sbd_mat(sbd / "dataset/cls/s3.mat", np.zeros((10, 10), np.uint8))
    xml(voc_root / "Annotations/s2.xml", [("unicorn", 0)])
    with pytest.raises(DatasetError) as info:
        build_index(voc_cfg(devkit, sbd), tmp_path / "index")
    message = str(info.value)
    assert "4 problems" in message
    assert "'v2'" in message and str(voc_root / "SegmentationClass/v2.png") in message
    assert "'s1'" in message and str(sbd / "dataset/cls/s1.mat") in message
    assert "'s3'" in message and "10x10" in message
    assert "'s2'" in message and "unicorn" in message


def test_voc12_missing_sbd_list_is_structural(voc, tmp_path):
    devkit, sbd = voc
    (sbd / "dataset/val.txt").unlink()
    with pytest.raises(DatasetError, match="SBD list file is missing") as info:
        build_index(voc_cfg(devkit, sbd, on_bad_item="skip"), tmp_path / "index")
    assert str(sbd / "dataset/val.txt") in str(info.value)


# ------------------------------------------------------------------------ fake COCO

CATEGORIES = [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}, {"id": 3, "name": "car"}]
COCO_CLASSES = ["background", "person", "car", "dog"]


def rectangle(x0, y0, x1, y1) -> list[list[float]]:
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def uncompressed_rle(binary: np.ndarray) -> dict:
    """COCO's crowd format: run lengths over the column-major pixels, starting with zeros."""
    flat = binary.flatten(order="F").astype(np.uint8)
    counts, current, run = [], 0, 0
    for value in flat:
        if value != current:
            counts.append(run)
            current, run = value, 0
        run += 1
    counts.append(run)
    return {"counts": counts, "size": list(binary.shape)}


def annotation(ann_id, image_id, category, segmentation, area, crowd=0):
    return {"id": ann_id, "image_id": image_id, "category_id": category, "iscrowd": crowd,
            "segmentation": segmentation, "area": area, "bbox": [0, 0, 1, 1]}


@pytest.fixture
def coco(tmp_path) -> Path:
    root = tmp_path / "coco"
    crowd = np.zeros((H, W), bool)
    crowd[0:12, 0:40] = True
    train_images = [(9, "train"), (25, "train"), (30, "train")]
    val_images = [(42, "val"), (50, "val")]
    for number, split in train_images + val_images:
        jpeg(root / f"{split}2014" / f"COCO_{split}2014_{number:012d}.jpg", seed=number)
    train = {"images": [{"id": n, "file_name": f"COCO_train2014_{n:012d}.jpg", "height": H, "width": W}
                        for n, _ in reversed(train_images)],
             "categories": CATEGORIES,
             "annotations": [
                 annotation(1, 9, 1, rectangle(2, 2, 30, 25), 644.0),         # person, big
                 annotation(2, 9, 18, rectangle(10, 10, 20, 20), 100.0),      # dog on top of it
                 annotation(3, 25, 3, rectangle(20, 5, 35, 20), 225.0),       # car
                 annotation(4, 25, 1, uncompressed_rle(crowd), 480.0, crowd=1),
                 annotation(5, 30, 1, uncompressed_rle(crowd), 480.0, crowd=1)]}
    val = {"images": [{"id": n, "file_name": f"COCO_val2014_{n:012d}.jpg", "height": H, "width": W}
                      for n, _ in val_images],
           "categories": CATEGORIES,
           "annotations": [annotation(6, 42, 18, rectangle(5, 5, 15, 15), 100.0)]}
    (root / "annotations").mkdir(parents=True)
    (root / "annotations/instances_train2014.json").write_text(json.dumps(train))
    (root / "annotations/instances_val2014.json").write_text(json.dumps(val))
    return root


def coco_cfg(root: Path, **extra) -> dict:
    return dict({"kind": "coco14", "root": str(root), "train_split": "train", "mask_shards": 2,
                 "on_bad_item": "error"}, **extra)


def test_coco14_index_classes_labels_and_shards(coco, tmp_path):
    out = tmp_path / "index"
    index = build_index(coco_cfg(coco), out)
    assert index.classes == COCO_CLASSES and index.void == 255
    assert index.ids("train") == ["COCO_train2014_000000000009", "COCO_train2014_000000000025"]
    assert index.ids("val") == ["COCO_val2014_000000000042"]
    assert index.labels("COCO_train2014_000000000009") == [1, 3]  # person (id 1), dog (id 18)
    assert index.labels("COCO_train2014_000000000025") == [2]     # car (id 3); crowd is no label
    assert index.size("COCO_val2014_000000000042") == (H, W)
    report = (out / "report.md").read_text()
    assert "COCO_train2014_000000000030" in report and "COCO_val2014_000000000050" in report
    shards = index.mask_shards()
    assert shards == {str(out.resolve() / "gt_masks/train_shard0.h5"): ["COCO_train2014_000000000009"],
                      str(out.resolve() / "gt_masks/train_shard1.h5"): ["COCO_train2014_000000000025"],
                      str(out.resolve() / "gt_masks/val_shard0.h5"): ["COCO_val2014_000000000042"]}
    for path, ids in shards.items():
        split = Path(path).name.split("_")[0]
        render_coco_masks(annotation_file(coco, split), ids, path)

    nine = index.read_mask("COCO_train2014_000000000009")
    assert nine.dtype == np.uint8 and nine.shape == (H, W)
    assert nine[15, 15] == 3          # the smaller dog wins over the person
    assert nine[22, 5] == 1 and nine[28, 38] == 0
    twenty_five = index.read_mask("COCO_train2014_000000000025")
    assert twenty_five[2, 5] == 255   # crowd is void
    assert twenty_five[8, 25] == 2    # the car keeps its label inside the crowd region
    assert twenty_five[25, 5] == 0
    assert set(np.unique(index.read_mask("COCO_val2014_000000000042")).tolist()) == {0, 3}


def test_coco14_validation_errors(coco, tmp_path):
    (coco / "train2014/COCO_train2014_000000000009.jpg").unlink()
    truncated = coco / "train2014/COCO_train2014_000000000025.jpg"
    truncated.write_bytes(truncated.read_bytes()[:300])
    jpeg(coco / "val2014/COCO_val2014_000000000042.jpg", size=(20, 20))
    with pytest.raises(DatasetError) as info:
        build_index(coco_cfg(coco), tmp_path / "index")
    message = str(info.value)
    assert "3 problems" in message
    assert "'COCO_train2014_000000000009'" in message and "image file is missing" in message
    assert str(truncated) in message and "cannot be decoded" in message
    assert "'COCO_val2014_000000000042'" in message and "20x20" in message


def test_coco14_unknown_category_and_missing_annotations(coco, tmp_path):
    data = json.loads((coco / "annotations/instances_val2014.json").read_text())
    data["annotations"][0]["category_id"] = 77
    (coco / "annotations/instances_val2014.json").write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=r"'COCO_val2014_000000000042': annotations use category ids \[77\]"):
        build_index(coco_cfg(coco), tmp_path / "index")
    shutil.rmtree(coco / "annotations")
    with pytest.raises(DatasetError, match="annotation file of split 'train' is missing"):
        build_index(coco_cfg(coco, on_bad_item="skip"), tmp_path / "index")


# ------------------------------------------------------------------ more validation


def test_coco14_split_sizes_and_left_out_images(coco, tmp_path):
    index = build_index(coco_cfg(coco), tmp_path / "index")
    # 3 train / 2 val images; 30 (crowd only) and 50 (no annotation) have no label.
    assert {s: len(index.ids(s)) for s in index.splits()} == {"train": 2, "val": 1}
    report = (tmp_path / "index/report.md").read_text()
    assert "## Left out by design (2)" in report
    assert "train `COCO_train2014_000000000030`: no non-crowd annotation" in report
    # A crowd annotation gives no image-level label (25 has a crowd of persons and a car).
    assert index.labels("COCO_train2014_000000000025") == [COCO_CLASSES.index("car")]


def test_coco14_verify_images_false_only_checks_existence(coco, tmp_path):
    truncated = coco / "train2014/COCO_train2014_000000000025.jpg"
    truncated.write_bytes(truncated.read_bytes()[:300])
    index = build_index(coco_cfg(coco, verify_images=False), tmp_path / "index")
    assert "COCO_train2014_000000000025" in index.ids("train")
    (coco / "val2014/COCO_val2014_000000000042.jpg").unlink()
    with pytest.raises(DatasetError, match="'COCO_val2014_000000000042': image file is missing"):
        build_index(coco_cfg(coco, verify_images=False), tmp_path / "index2")


def _rewrite_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("case, expected", [
    ("invalid_json", "annotation file is not valid JSON"),
    ("categories_differ", "categories of split 'val' differ from those of split 'train'"),
    ("classes", "dataset.classes does not match the 4 classes"),
    ("void", "dataset.void 0 is not 255"),
    ("mask_shards", "dataset.mask_shards must be an integer >= 1, got 0"),
    ("split_name", "dataset.splits names 'train_aug', which coco14 does not build"),
    ("eval_split", "eval_split 'test' is not one of the splits"),
])
def test_coco14_structural_errors(coco, tmp_path, case, expected):
    extra = {}
    val_file = coco / "annotations/instances_val2014.json"
    if case == "invalid_json":
        val_file.write_text("{not json")
    elif case == "categories_differ":
        _rewrite_json(val_file, lambda d: d["categories"].append({"id": 44, "name": "bottle"}))
    elif case == "classes":
        extra["classes"] = ["background", "person"]
    elif case == "void":
        extra["void"] = 0
    elif case == "mask_shards":
        extra["mask_shards"] = 0
    elif case == "split_name":
        extra["splits"] = {"train": "x", "val": "y", "train_aug": "z"}
    elif case == "eval_split":
        extra["eval_split"] = "test"
    with pytest.raises(DatasetError, match=re.escape(expected)):
        build_index(coco_cfg(coco, on_bad_item="skip", **extra), tmp_path / "index")
    assert not (tmp_path / "index/index.csv").exists()


@pytest.mark.parametrize("case, expected", [
    ("classes", "is not the VOC class list"),
    ("void", "dataset.void 0 is not VOC's void 255"),
    ("label_source", "dataset.label_source must be 'mask' or 'xml', got 'json'"),
    ("sbd_without_cls", "dataset.sbd_root has no cls/ folder"),
    ("aug_missing", "dataset.aug_masks folder does not exist"),
    ("voc_list_missing", "list file for split 'val' is missing"),
    ("root_missing", "root folder"),
    ("split_name", "dataset.splits names 'test', which voc12 does not build"),
])
def test_voc12_structural_errors(voc, tmp_path, case, expected):
    devkit, sbd = voc
    extra = {}
    if case == "classes":
        extra["classes"] = VOC_CLASSES[:5]
    elif case == "void":
        extra["void"] = 0
    elif case == "label_source":
        extra["label_source"] = "json"
    elif case == "sbd_without_cls":
        shutil.rmtree(sbd / "dataset/cls")
    elif case == "aug_missing":
        extra["aug_masks"] = str(tmp_path / "nowhere")
    elif case == "voc_list_missing":
        (devkit / "VOC2012/ImageSets/Segmentation/val.txt").unlink()
    elif case == "root_missing":
        devkit = tmp_path / "no_devkit"
    elif case == "split_name":
        extra["splits"] = {"train_aug": "a", "val": "b", "test": "c"}
    with pytest.raises(DatasetError, match=re.escape(expected)):
        build_index(voc_cfg(devkit, sbd, on_bad_item="skip", **extra), tmp_path / "index")


@pytest.mark.parametrize("case, expected", [
    ("image_missing", "id 'a3': image file is missing"),
    ("foreign_value", "id 'a2': mask has values [40]"),
    ("xml_missing", "id 's2': no mask and no XML annotation"),
    ("xml_broken", "id 's2': XML annotation cannot be parsed"),
    ("mat_values", "id 's1': mask has values [30]"),
    ("no_label", "id 'a3': no foreground label in the training split 'train_aug'"),
])
def test_voc12_item_errors_and_skip(voc, tmp_path, case, expected):
    devkit, sbd = voc
    voc_root = devkit / "VOC2012"
    bad_id = expected.split("'")[1]
    if case == "image_missing":
        (voc_root / "JPEGImages/a3.jpg").unlink()
    elif case == "foreign_value":
        mask = block_mask(DOG)
        mask[0, 0] = 40
        save_index_png(voc_root / "SegmentationClass/a2.png", mask)
    elif case == "xml_missing":
        (voc_root / "Annotations/s2.xml").unlink()
    elif case == "xml_broken":
        (voc_root / "Annotations/s2.xml").write_text("<annotation><object>")
    elif case == "mat_values":
        mask = block_mask(DOG, void_border=False)
        mask[0, 0] = 30
        sbd_mat(sbd / "dataset/cls/s1.mat", mask)
    elif case == "no_label":
        save_index_png(voc_root / "SegmentationClass/a3.png", np.zeros((H, W), np.uint8))
    with pytest.raises(DatasetError, match=re.escape(expected)):
        build_index(voc_cfg(devkit, sbd), tmp_path / "index")
    with pytest.warns(UserWarning, match="skipped 1 bad item"):
        index = build_index(voc_cfg(devkit, sbd, on_bad_item="skip", max_skip_fraction=0.4),
                            tmp_path / "skipped")
    assert bad_id not in index.ids("train_aug")
    assert len(index.ids("train_aug")) == 5
    assert bad_id in (tmp_path / "skipped/report.md").read_text()


def test_voc12_split_sizes_and_labels_from_masks(voc, tmp_path):
    devkit, sbd = voc
    index = build_index(voc_cfg(devkit, sbd), tmp_path / "index")
    sizes = {s: len(index.ids(s)) for s in index.splits()}
    # |train_aug| = |SBD train + SBD val + VOC train - VOC val| = |{s1,s2,a1,v1,s3,a2} + {a1,a2,a3} - {v1,v2}|
    assert sizes == {"train_aug": 6, "train": 3, "val": 2}
    assert not set(index.ids("train_aug")) & set(index.ids("val"))
    for image_id in index.ids("train_aug") + index.ids("val"):
        if index.has_mask(image_id):
            mask = index.read_mask(image_id)
            present = sorted(int(v) for v in np.unique(mask) if 0 < v < 255)
            assert index.labels(image_id) == present, image_id


def test_voc12_sbd_masks_file_written_even_when_unused(voc, tmp_path):
    devkit, sbd = voc
    aug = devkit / "VOC2012/SegmentationClassAug"
    aug.mkdir()
    for image_id in ("s1", "s3"):
        save_index_png(aug / f"{image_id}.png", block_mask(MASK_CLASS[image_id], void_border=False))
    (sbd / "dataset/train.txt").write_text("s1\n")
    (sbd / "dataset/val.txt").write_text("s3\n")
    index = build_index(voc_cfg(devkit, sbd), tmp_path / "index")
    with MapReader(tmp_path / "index/sbd_masks.h5", kind="gt_mask") as reader:
        assert reader.ids() == []
    assert not index.read_mask("s1")[4].any()  # from SegmentationClassAug


def test_coco14_stale_mask_shard_is_caught(coco, tmp_path):
    out = tmp_path / "index"
    index = build_index(coco_cfg(coco), out, mask_dir=tmp_path / "masks")
    shards = index.mask_shards()
    assert all(Path(p).parent == (tmp_path / "masks/gt_masks").resolve() for p in shards)
    paths = [shard_file(tmp_path / "masks", split, k) for split in ("train", "val") for k in range(2)]
    for path in paths:
        split = path.name.split("_")[0]
        render_coco_masks(annotation_file(coco, split), planned_shard_ids(index, path), path)
    check_mask_shards(index, paths)  # val_shard1 is planned empty and rendered empty
    with MapReader(paths[3], kind="gt_mask") as reader:
        assert reader.ids() == []
    render_coco_masks(annotation_file(coco, "train"), ["COCO_train2014_000000000009"], paths[1])
    with pytest.raises(DatasetError, match="train_shard1.h5 was rendered for other ids"):
        check_mask_shards(index, paths)
    with pytest.raises(DatasetError, match="val_shard0.h5 is not among the rendered shards"):
        check_mask_shards(index, paths[:2])


# ------------------------------------------------------------------ through the workflow

REPO = Path(__file__).resolve().parents[1]


def snakemake(workdir: Path, dataset: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    configfile = workdir / "dataset.yaml"
    configfile.write_text(yaml.safe_dump({"run": "real", "rounds": 0, "dataset": dataset}))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(workdir), "--configfile", str(configfile), "--cores", "2", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    return result


@pytest.mark.workflow
def test_coco14_masks_rendered_by_shard_jobs_before_the_index_is_published(coco, tmp_path):
    before = tree(coco)
    work = tmp_path / "work"
    dataset = {"kind": "coco14", "root": str(coco), "mask_shards": 2,
               "splits": {"train": "train", "val": "val"}, "train_split": "train", "eval_split": "val"}
    plan = snakemake(work, dataset, "-n").stdout
    assert "render_coco_masks        4" in plan and "dataset_ready            1" in plan
    result = snakemake(work, dataset, "--until", "dataset_ready")
    assert tree(coco) == before  # nothing written into the dataset
    assert result.stderr.count("rule render_coco_masks:") == 4
    dataset_dir = work / "results/real/dataset"
    assert sorted(p.name for p in (dataset_dir / "gt_masks").iterdir()) == [
        "train_shard0.h5", "train_shard1.h5", "val_shard0.h5", "val_shard1.h5"]
    index = DatasetIndex.load(dataset_dir)
    assert index.classes == COCO_CLASSES
    twenty_five = index.read_mask("COCO_train2014_000000000025")
    assert twenty_five[2, 5] == 255 and twenty_five[8, 25] == 2  # crowd void, car inside it
    assert index.read_mask("COCO_train2014_000000000009")[15, 15] == 3
    # Every consumer of masks reads index.csv, which exists only once all shards are checked.
    log = (work / "results/real/logs/dataset_ready.log").read_text()
    assert "4 mask shard(s) match the plan" in log
    # A deleted shard: reading says how to render it again, and doing so reruns nothing else.
    shard = dataset_dir / "gt_masks/train_shard1.h5"
    shard.unlink()
    with pytest.raises(DatasetError, match="which is missing; render it again with `snakemake "):
        DatasetIndex.load(dataset_dir).read_mask("COCO_train2014_000000000025")
    rendered = snakemake(work, dataset, str(shard.relative_to(work)))
    assert rendered.stderr.count("rule render_coco_masks:") == 1 and "rule dataset_" not in rendered.stderr
    assert DatasetIndex.load(dataset_dir).read_mask("COCO_train2014_000000000025")[2, 5] == 255
    again = snakemake(work, dataset, "-n", "--until", "dataset_ready").stdout
    assert re.search(r"^total\s+0$", again, re.M) and "rule " not in again


@pytest.mark.workflow
def test_voc12_with_sbd_through_the_workflow(voc, tmp_path):
    devkit, sbd = voc
    before = tree(devkit), tree(sbd)
    work = tmp_path / "work"
    dataset = {"kind": "voc12", "root": str(devkit), "sbd_root": str(sbd),
               "splits": {"train_aug": "train_aug", "train": "train", "val": "val"},
               "train_split": "train_aug", "eval_split": "val"}
    snakemake(work, dataset, "--until", "dataset_index")
    assert (tree(devkit), tree(sbd)) == before
    dataset_dir = work / "results/real/dataset"
    index = DatasetIndex.load(dataset_dir)
    assert index.ids("train_aug") == ["a1", "a2", "a3", "s1", "s2", "s3"]
    assert np.array_equal(index.read_mask("s1"), block_mask(DOG, void_border=False))
    with MapReader(dataset_dir / "sbd_masks.h5", kind="gt_mask") as reader:
        assert sorted(reader.ids()) == ["s1", "s3"]
    # A broken SBD file stops the index step with the id and file in its log.
    (sbd / "dataset/cls/s3.mat").write_bytes(b"garbage")
    failed = snakemake(tmp_path / "work2", dataset, "--until", "dataset_index", check=False)
    assert failed.returncode != 0
    log = (tmp_path / "work2/results/real/logs/dataset_index.log").read_text()
    assert "id 's3'" in log and str(sbd / "dataset/cls/s3.mat") in log
    assert not (tmp_path / "work2/results/real/dataset/sbd_masks.h5").exists()


def test_coco14_exif_rotated_image_with_raw_size_annotation_is_refused(coco, tmp_path):
    # Issue 10 item 9: the annotation matches the stored pixels, but the EXIF tag turns the
    # image; every step reads it upright, so its mask would not fit.
    path = coco / "train2014" / "COCO_train2014_000000000025.jpg"
    tags = Image.Exif()
    tags[0x0112] = 6
    Image.open(path).convert("RGB").save(path, quality=90, exif=tags.tobytes())
    with pytest.raises(DatasetError, match=r"id 'COCO_train2014_000000000025': image is "
                       rf"{H}x{W} but its annotation says {W}x{H} .*EXIF orientation \(6"):
        build_index(coco_cfg(coco), tmp_path / "index")
