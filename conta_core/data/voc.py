"""PASCAL VOC 2012 with the SBD augmentation (``dataset.kind: voc12``).

Why a reader of its own: the standard WSSS training set ``train_aug`` is not
a list shipped with VOC; it is SBD train + SBD val + VOC train, minus VOC val
(10,582 images on the real data), and its masks come from three places.

Config keys: ``root`` (``VOCdevkit/VOC2012``, or ``VOCdevkit`` holding it),
``sbd_root`` (optional: ``benchmark_RELEASE`` or its ``dataset`` folder, with
``cls/*.mat``, ``img/``, ``train.txt``, ``val.txt``), ``aug_masks`` (optional:
a ready ``SegmentationClassAug`` folder; default ``root/SegmentationClassAug``
when it exists), ``label_source`` (``mask``, the default, or ``xml``),
``train_split`` (default ``train_aug``), ``on_bad_item``. The VOC class list
and void 255 are fixed; ``classes``/``void``, if given, must agree.

Splits: ``train_aug`` (needs SBD or ``aug_masks``; from ``aug_masks`` alone it
is its ids + VOC train - VOC val), ``train`` (1,464), ``val`` (1,449), ids
sorted. Each image's mask is, first found: ``SegmentationClass/<id>.png``
(official, with void borders), ``aug_masks/<id>.png``, then SBD
``cls/<id>.mat`` (``GTcls.Segmentation``, no void). SBD masks are rendered
into ``<out_dir>/sbd_masks.h5`` (the user's dataset is never written to) and
referenced as ``h5:<file>``; the file is written whenever ``sbd_root`` is
given, empty if no image needs it. VOC train/val images must have a mask.

Image-level labels come from the mask; an image without any mask, or every
image with ``label_source: xml``, takes them from ``Annotations/<id>.xml``:
every ``object/name`` counts, difficult and truncated objects included, as
IRNet's ``cls_labels.npy`` does (object parts are not objects and are ignored).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy.io import loadmat
from scipy.io.matlab import MatReadError

from ..store import MapWriter
from .index import (GT_MASK_KIND, Inspection, Item, Problem, Scan, bad, check_class_list,
                    check_mask_values, dataset_root, decode_image, find_image,
                    inspect_image_and_mask, inspect_many, read_list_file, read_splits)
from .palette import voc_colormap

VOC_CLASSES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
               "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor"]
VOID = 255
SBD_MASK_FILE = "sbd_masks.h5"


def scan_voc12(cfg: dict, out_dir: Path) -> Scan:
    """Find the splits and every image's mask and labels; render SBD masks to HDF5."""
    root = dataset_root(cfg)
    if (root / "VOC2012").is_dir():
        root = root / "VOC2012"
    scan = Scan("voc12", root, list(VOC_CLASSES), VOID, voc_colormap(len(VOC_CLASSES)),
                default_train_split="train_aug")
    if cfg.get("classes") and list(cfg["classes"]) != VOC_CLASSES:
        scan.problems.append(Problem(f"dataset.classes {cfg['classes']} is not the VOC class list "
                                     f"{VOC_CLASSES}", structural=True))
    if cfg.get("void") is not None and int(cfg["void"]) != VOID:
        scan.problems.append(Problem(f"dataset.void {cfg['void']} is not VOC's void {VOID}",
                                     structural=True))
    label_source = cfg.get("label_source", "mask")
    if label_source not in ("mask", "xml"):
        scan.problems.append(Problem(f"dataset.label_source must be 'mask' or 'xml', got "
                                     f"{label_source!r}", structural=True))
    check_class_list(scan)
    read_splits(scan, {"train": "train.txt", "val": "val.txt"}, root / "ImageSets" / "Segmentation")
    sbd = _sbd_folder(cfg, scan)
    aug_dir = Path(cfg["aug_masks"]).expanduser().resolve() if cfg.get("aug_masks") else \
        root / "SegmentationClassAug"
    if cfg.get("aug_masks") and not aug_dir.is_dir():
        scan.problems.append(Problem("dataset.aug_masks folder does not exist", paths=(str(aug_dir),),
                                     structural=True))
    aug_dir = aug_dir if aug_dir.is_dir() else None
    wants_aug = (cfg.get("train_split") or "train_aug") == "train_aug" or \
        "train_aug" in (cfg.get("splits") or {})
    _add_train_aug(scan, sbd, aug_dir, wants_aug)
    if any(p.structural for p in scan.problems):
        return scan

    voc_listed = set(scan.splits.get("train", [])) | set(scan.splits.get("val", []))
    h5_path = Path(out_dir).resolve() / SBD_MASK_FILE
    tasks = {}
    for image_id in dict.fromkeys(i for ids in scan.splits.values() for i in ids):
        image = find_image(root / "JPEGImages", image_id)
        if not image.is_file() and sbd is not None and find_image(sbd / "img", image_id).is_file():
            image = find_image(sbd / "img", image_id)
        mask = root / "SegmentationClass" / f"{image_id}.png"
        if not mask.is_file() and aug_dir is not None and (aug_dir / f"{image_id}.png").is_file():
            mask = aug_dir / f"{image_id}.png"
        mat = sbd / "cls" / f"{image_id}.mat" if sbd is not None else None
        if mask.is_file() or image_id in voc_listed:
            task = _png_task(image_id, image, mask)
        elif mat is not None and mat.is_file():
            task = _sbd_task(image_id, image, mat, h5_path)
        else:
            task = _png_task(image_id, image, None)
        tasks[image_id] = _with_xml_labels(task, image_id, root, force=label_source == "xml")

    if sbd is not None:
        # Written whenever SBD is given (possibly empty, when every image has a PNG
        # mask), so a workflow can declare the file as an output of the index step.
        with MapWriter(h5_path, kind=GT_MASK_KIND,
                       attrs={"classes": VOC_CLASSES, "source": str(sbd)}) as writer:
            rendered = []

            def store(image_id: str, mask: np.ndarray) -> None:
                writer.put(image_id, mask)
                rendered.append(image_id)

            inspect_many(scan, tasks, store)
        scan.notes.append(f"{len(rendered)} SBD masks rendered into `{h5_path}`")
    else:
        inspect_many(scan, tasks)
    return scan


def _sbd_folder(cfg: dict, scan: Scan) -> Path | None:
    if not cfg.get("sbd_root"):
        return None
    sbd = Path(cfg["sbd_root"]).expanduser().resolve()
    if (sbd / "dataset").is_dir():
        sbd = sbd / "dataset"
    if not (sbd / "cls").is_dir():
        scan.problems.append(Problem("dataset.sbd_root has no cls/ folder of .mat masks (expected "
                                     "benchmark_RELEASE or benchmark_RELEASE/dataset)",
                                     paths=(str(sbd),), structural=True))
        return None
    return sbd


def _add_train_aug(scan: Scan, sbd: Path | None, aug_dir: Path | None, wanted: bool) -> None:
    """train_aug = (SBD train + SBD val, or the aug-mask ids) + VOC train - VOC val."""
    if sbd is not None:
        aug_ids: list[str] = []
        for name in ("train.txt", "val.txt"):
            path = sbd / name
            if not path.is_file():
                scan.problems.append(Problem("SBD list file is missing", paths=(str(path),),
                                             structural=True))
                continue
            aug_ids += read_list_file(path, scan.problems)
        source = f"SBD {sbd}/{{train,val}}.txt + VOC train - VOC val"
    elif aug_dir is not None:
        aug_ids = [p.stem for p in aug_dir.glob("*.png")]
        source = f"{aug_dir}/*.png + VOC train - VOC val"
    else:
        message = ("no train_aug split: it needs SBD or SegmentationClassAug masks; give "
                   f"dataset.sbd_root or dataset.aug_masks (or put SegmentationClassAug in {scan.root})")
        if wanted:
            scan.problems.append(Problem(message, structural=True))
        else:
            scan.notes.append(message)
        return
    if "val" not in scan.splits:
        return
    val = set(scan.splits["val"])
    ids = sorted((set(aug_ids) | set(scan.splits.get("train", []))) - val)
    scan.splits = {"train_aug": ids, **scan.splits}
    scan.split_sources = {"train_aug": source, **scan.split_sources}


def _png_task(image_id: str, image: Path, mask: Path | None):
    return lambda: inspect_image_and_mask(image_id, image, mask, len(VOC_CLASSES), VOID)


def _sbd_task(image_id: str, image: Path, mat: Path, h5_path: Path):
    def inspect() -> Inspection:
        size, error = decode_image(image)
        if error:
            return bad(image_id, error, image)
        width, height = size
        try:
            segmentation = np.asarray(loadmat(mat, squeeze_me=True,
                                              struct_as_record=False)["GTcls"].Segmentation)
        except (OSError, ValueError, KeyError, AttributeError, MatReadError) as err:
            return bad(image_id, f"SBD .mat has no readable GTcls.Segmentation "
                       f"({type(err).__name__}: {err})", mat)
        if segmentation.shape != (height, width):
            return bad(image_id, f"SBD mask is {segmentation.shape[1]}x{segmentation.shape[0]} but "
                       f"the image is {width}x{height} (width x height)", image, mat)
        if segmentation.min() < 0 or segmentation.max() > 255:
            return bad(image_id, f"SBD mask values {segmentation.min()}..{segmentation.max()} do not "
                       "fit uint8", mat)
        mask = segmentation.astype(np.uint8)
        found = check_mask_values(image_id, Item(str(image), f"h5:{h5_path}", height, width, ()),
                                  mask, len(VOC_CLASSES), VOID)
        if found.item is not None:
            found.array = mask
        else:
            found.problems = [replace(p, paths=(str(mat),)) for p in found.problems]
        return found
    return inspect


def _with_xml_labels(task, image_id: str, root: Path, *, force: bool):
    """Labels from Annotations/<id>.xml when forced or when the image has no mask."""
    def inspect() -> Inspection:
        found = task()
        if found.item is None or (found.item.mask and not force):
            return found
        path = root / "Annotations" / f"{image_id}.xml"
        labels, error = xml_labels(path)
        if error:
            return bad(image_id, error, path)
        found.item = Item(found.item.image, found.item.mask, found.item.height, found.item.width,
                          labels)
        return found
    return inspect


def xml_labels(path: Path) -> tuple[tuple[int, ...], str | None]:
    """Class indices of the objects in a VOC XML annotation (difficult ones too), or an error."""
    if not path.is_file():
        return (), "no mask and no XML annotation to take image-level labels from"
    try:
        names = [obj.findtext("name", "").strip() for obj in ET.parse(path).getroot().findall("object")]
    except ET.ParseError as err:
        return (), f"XML annotation cannot be parsed ({err})"
    unknown = sorted(set(names) - set(VOC_CLASSES[1:]))
    if unknown:
        return (), f"XML annotation names unknown classes {unknown}"
    return tuple(sorted({VOC_CLASSES.index(n) for n in names})), None
