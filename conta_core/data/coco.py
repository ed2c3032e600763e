"""MS-COCO 2014 (``dataset.kind: coco14``) from the instance annotations.

Layout under ``root``: ``train2014/``, ``val2014/`` and
``annotations/instances_{train,val}2014.json``. Splits ``train`` and ``val``,
images in ascending COCO image id; an image's index id is its file name stem
(``COCO_train2014_000000000009``).

Classes: 81, ``background`` then the 80 category names, category ids mapped to
1..80 in ascending id order (COCO's ids have gaps: 1..90). Image-level labels
are the categories of the image's non-crowd annotations. Images without any
non-crowd annotation have no label; they are left out of both splits (as is
usual for COCO WSSS: train 82,081 / val 40,137 on the real data) and listed in
``report.md``.

Semantic masks are not stored by COCO; they are rendered from the annotations
into sharded HDF5 files ``<mask_dir>/gt_masks/<split>_shard<k>.h5`` (kind
``gt_mask``; ``mask_dir`` defaults to the index folder) by
:func:`render_coco_masks`, one call per shard so a workflow rule can run shards
in parallel. Every split has exactly ``mask_shards`` shards (contiguous runs of
ids; a shard is empty when a split has fewer images than shards), so the
workflow plans ``2 * mask_shards`` jobs from the config alone, whatever the
number of images. The index already names each image's shard (``h5:<file>``
in the mask column; ``DatasetIndex.mask_shards()`` lists them);
:func:`check_mask_shards` checks rendered shards against that plan. Rendering rules: crowd regions
are void (255); non-crowd instances are painted over them in decreasing area,
so where instances overlap the smaller one wins, and an instance inside a
crowd region keeps its label.

Config keys: ``root``, ``mask_shards`` (shards per split, default 8),
``verify_images`` (default true: decode every JPEG and check its size against
the annotation; false only checks that the file exists), ``train_split``
(default ``train``), ``on_bad_item``; ``classes``/``void``, if given, must agree.
"""
from __future__ import annotations

import json
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Iterable

import numpy as np
from pycocotools import mask as mask_utils

from ..store import MapWriter, digest
from .images import ORIENTATION_NAMES, SWAPPING
from .index import (GT_MASK_KIND, DatasetError, Inspection, Item, Problem, Scan, bad,
                    check_class_list, dataset_root, decode_image_oriented, inspect_many)
from .palette import voc_colormap

VOID = 255
COCO_SPLITS = {"train": ("train2014", "instances_train2014.json"),
               "val": ("val2014", "instances_val2014.json")}


def annotation_file(root: str | Path, split: str) -> Path:
    """The instances json of a split (what a mask-rendering rule needs)."""
    return Path(root).expanduser().resolve() / "annotations" / COCO_SPLITS[split][1]


def shard_file(out_dir: str | Path, split: str, shard: int) -> Path:
    return Path(out_dir).resolve() / "gt_masks" / f"{split}_shard{shard}.h5"


def class_names(categories: list[dict]) -> tuple[list[str], dict[int, int]]:
    """(["background", names in ascending category id], category id -> class index)."""
    ordered = sorted(categories, key=lambda c: c["id"])
    return (["background"] + [c["name"] for c in ordered],
            {c["id"]: index for index, c in enumerate(ordered, start=1)})


def scan_coco14(cfg: dict, out_dir: Path, mask_dir: Path | None = None) -> Scan:
    """Read both instance files, derive labels and plan mask shards; check images."""
    root = dataset_root(cfg)
    scan = Scan("coco14", root, [], VOID, None)
    num_shards = cfg.get("mask_shards", 8)
    if not isinstance(num_shards, int) or isinstance(num_shards, bool) or num_shards < 1:
        scan.problems.append(Problem(f"dataset.mask_shards must be an integer >= 1, got {num_shards!r}",
                                     structural=True))
    datasets = {}
    for split, (_, ann_name) in COCO_SPLITS.items():
        path = root / "annotations" / ann_name
        scan.split_sources[split] = str(path)
        try:
            datasets[split] = json.loads(path.read_text())
        except FileNotFoundError:
            scan.problems.append(Problem(f"annotation file of split {split!r} is missing",
                                         paths=(str(path),), structural=True))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            scan.problems.append(Problem(f"annotation file is not valid JSON ({err})",
                                         paths=(str(path),), structural=True))
    if not datasets:
        return scan
    first = next(iter(datasets))
    scan.classes, to_class = class_names(datasets[first]["categories"])
    scan.palette = voc_colormap(len(scan.classes))
    for split, data in datasets.items():
        if class_names(data["categories"])[0] != scan.classes:
            scan.problems.append(Problem(f"categories of split {split!r} differ from those of split "
                                         f"{first!r}", paths=(scan.split_sources[split],),
                                         structural=True))
    if cfg.get("classes") and list(cfg["classes"]) != scan.classes:
        scan.problems.append(Problem(f"dataset.classes does not match the {len(scan.classes)} "
                                     "classes of the annotation files", structural=True))
    if cfg.get("void") is not None and int(cfg["void"]) != VOID:
        scan.problems.append(Problem(f"dataset.void {cfg['void']} is not {VOID} (COCO masks are "
                                     "rendered with void 255)", structural=True))
    check_class_list(scan)
    if any(p.structural for p in scan.problems):
        return scan

    verify = bool(cfg.get("verify_images", True))
    tasks = {}
    for split, data in datasets.items():
        planned = _plan_split(scan, split, data, to_class, root / COCO_SPLITS[split][0],
                              out_dir if mask_dir is None else mask_dir, num_shards)
        scan.splits[split] = list(planned)
        tasks.update({i: _image_task(i, item, verify) for i, item in planned.items()})
    inspect_many(scan, tasks)
    return scan


def _plan_split(scan: Scan, split: str, data: dict, to_class: dict[int, int], image_dir: Path,
                out_dir: Path, num_shards: int) -> dict[str, Item]:
    """Items (labels from annotations, mask = its shard) of one split, in image id order."""
    labels: dict[int, set[int]] = defaultdict(set)
    unknown: dict[int, set[int]] = defaultdict(set)
    for ann in data["annotations"]:
        if ann["category_id"] not in to_class:
            unknown[ann["image_id"]].add(ann["category_id"])
        elif not ann.get("iscrowd", 0):
            labels[ann["image_id"]].add(to_class[ann["category_id"]])
    images = sorted(data["images"], key=lambda img: img["id"])
    kept = []
    for img in images:
        image_id = Path(img["file_name"]).stem
        if unknown.get(img["id"]):
            scan.problems.append(Problem(f"annotations use category ids {sorted(unknown[img['id']])} "
                                         "not in the categories list", image_id,
                                         (scan.split_sources[split],)))
        elif not labels.get(img["id"]):
            scan.left_out.append(f"{split} `{image_id}`: no non-crowd annotation, so no label")
        else:
            kept.append((image_id, img))
    planned = {}
    for position, (image_id, img) in enumerate(kept):
        shard = shard_file(out_dir, split, position * num_shards // len(kept))
        planned[image_id] = Item(str(image_dir / img["file_name"]), f"h5:{shard}",
                                 int(img["height"]), int(img["width"]),
                                 tuple(sorted(labels[img["id"]])))
    return planned


def _image_task(image_id: str, item: Item, verify: bool):
    def inspect() -> Inspection:
        path = Path(item.image)
        if not verify:
            return Inspection(item) if path.is_file() else bad(image_id, "image file is missing", path)
        size, orient, error = decode_image_oriented(path)
        if error:
            return bad(image_id, error, path)
        if size != (item.width, item.height):
            rotated = ""
            if orient in SWAPPING and size == (item.height, item.width):
                rotated = (f"; only its stored pixels match the annotation, but its EXIF orientation "
                           f"({orient}, {ORIENTATION_NAMES[orient]}) turns it, and every step reads "
                           "images upright: remove the orientation tag from the file")
            return bad(image_id, f"image is {size[0]}x{size[1]} but its annotation says "
                       f"{item.width}x{item.height} (width x height){rotated}", path)
        return Inspection(item, orientation=orient)
    return inspect


def render_coco_masks(ann_file: str | Path, ids: Iterable[str], out_path: str | Path) -> None:
    """Render the semantic masks of ``ids`` (file name stems) into one HDF5 shard."""
    ann_file = Path(ann_file)
    data = json.loads(ann_file.read_text())
    names, to_class = class_names(data["categories"])
    by_stem = {Path(img["file_name"]).stem: img for img in data["images"]}
    anns_of: dict[int, list[dict]] = defaultdict(list)
    for ann in data["annotations"]:
        anns_of[ann["image_id"]].append(ann)
    ids = list(ids)
    missing = [i for i in ids if i not in by_stem]
    if missing:
        raise DatasetError(f"{ann_file} has no images named", missing)
    with MapWriter(out_path, kind=GT_MASK_KIND,
                   attrs={"classes": names, "source": str(ann_file), "ids_digest": digest(ids)}) as writer:
        for image_id in ids:
            if image_id in writer:  # kept from an interrupted attempt at the same shard
                continue
            img = by_stem[image_id]
            writer.put(image_id, semantic_mask(img, anns_of[img["id"]], to_class))


def semantic_mask(img: dict, anns: list[dict], to_class: dict[int, int]) -> np.ndarray:
    """uint8 HxW: crowd regions void, then non-crowd instances largest first (smaller wins)."""
    height, width = int(img["height"]), int(img["width"])
    mask = np.zeros((height, width), np.uint8)
    for ann in anns:
        if ann.get("iscrowd", 0):
            mask[_binary(ann, height, width)] = VOID
    instances = [a for a in anns if not a.get("iscrowd", 0)]
    for ann in sorted(instances, key=lambda a: -float(a["area"])):
        mask[_binary(ann, height, width)] = to_class[ann["category_id"]]
    return mask


def _binary(ann: dict, height: int, width: int) -> np.ndarray:
    segmentation = ann["segmentation"]
    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation["counts"], list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    with warnings.catch_warnings():
        # pycocotools' Cython decoder trips numpy 2's __array__(copy=) deprecation; harmless.
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle).astype(bool)


def planned_shard_ids(index, path: str | Path) -> list[str]:
    """The ids the index plans for one shard file (empty for an empty shard)."""
    target = Path(path).resolve()
    for shard, ids in index.mask_shards().items():
        if Path(shard).resolve() == target:
            return ids
    return []


def check_mask_shards(index, paths: Iterable[str | Path]) -> None:
    """Every planned shard is among ``paths`` and each holds exactly its planned ids.

    Compares the ``ids_digest`` each shard records, so a shard rendered for
    another plan (stale after the annotations or ``mask_shards`` changed) is
    caught without reading its masks.
    """
    from ..store import MapReader, StoreError

    given = {Path(p).resolve() for p in paths}
    planned = {Path(p).resolve(): ids for p, ids in index.mask_shards().items()}
    problems = [f"planned mask shard {p} is not among the rendered shards" for p in planned
                if p not in given]
    for path in sorted(given):
        ids = planned.get(path, [])
        try:
            with MapReader(path, kind=GT_MASK_KIND) as reader:
                recorded = reader.attrs.get("ids_digest")
        except StoreError as err:
            problems.append(str(err))
            continue
        if recorded != digest(list(ids)):
            problems.append(f"{path} was rendered for other ids than the {len(ids)} the index plans "
                            "for it (stale shard; delete it and rerun)")
    if problems:
        raise DatasetError(f"COCO mask shards do not match the index in {index.directory}", problems)
