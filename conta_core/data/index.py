"""The dataset index: one table of (split, image) rows every later step reads.

Why: the rules must not each re-walk a dataset folder with its own idea of
the layout. ``build_index`` reads a dataset once (VOC layout, the synthetic
set, VOC 2012 + SBD, COCO 2014), validates *every* item before any compute
starts, and writes ``index.csv`` + ``classes.json`` + ``report.md``;
:class:`DatasetIndex` then gives ids, image-level labels, sizes, images and
masks by id, whatever the source format was.

Validation collects all problems and raises one :class:`DatasetError` listing
each with its id and file, so a user fixes a dataset in one pass. With
``on_bad_item: skip`` bad items are dropped and listed in ``report.md``
instead, but never more than ``max_skip_fraction`` of a split, and structural
problems (a missing list file, a malformed classes.json, a class list that does
not match the masks, a class in nearly every training image - see
:mod:`.checks`) always stop the build. Validation decodes every image
and mask (that is what catches truncated JPEGs), so on a large dataset it
takes a while; it runs once per dataset.
"""
from __future__ import annotations

import csv
import json
import os
import warnings
from collections import Counter
from pathlib import Path

from . import checks
from .images import LARGE_SIDE
from .palette import voc_colormap
from .reader import GT_MASK_KIND, H5_PREFIX, INDEX_COLUMNS, DatasetError, DatasetIndex, Item
from .scan import (IMAGE_SUFFIXES, Inspection, Problem, Scan, bad, check_mask_values, decode_image,
                   decode_image_oriented, find_image, inspect_image_and_mask, inspect_many,
                   mask_labels, read_list_file)

# The readers (voc.py, coco.py, benches, tests) import these from here.
__all__ = ["GT_MASK_KIND", "H5_PREFIX", "IMAGE_SUFFIXES", "INDEX_COLUMNS", "DatasetError",
           "DatasetIndex", "Inspection", "Item", "Problem", "Scan", "bad", "build_index",
           "check_class_list", "check_mask_values", "dataset_root", "decode_image",
           "decode_image_oriented", "find_image", "finish_index", "inspect_image_and_mask",
           "inspect_many", "mask_labels", "publish_index", "read_list_file", "read_splits"]
DEFAULT_MAX_SKIP_FRACTION = 0.05


# ---------------------------------------------------------------- the VOC layout


def scan_voc_layout(cfg: dict) -> Scan:
    """Any dataset in VOC layout: ``JPEGImages``, ``SegmentationClass`` (index PNGs),
    ``ImageSets/Segmentation/<list>``, optional ``classes.json``. Labels come from the masks."""
    kind = cfg.get("kind", "voc_layout")
    root = dataset_root(cfg)
    problems: list[Problem] = []

    meta_path = root / "classes.json"
    meta = {}
    if meta_path.is_file():
        meta, meta_problems = checks.read_classes_json(meta_path)
        problems += [Problem(text, paths=(str(meta_path),), structural=True) for text in meta_problems]
    if cfg.get("classes") is not None:
        for text in checks.class_name_problems(cfg["classes"], "dataset.classes"):
            problems.append(Problem(text, structural=True))
    classes = cfg.get("classes") or meta.get("names")
    void = int(cfg["void"]) if cfg.get("void") is not None else int(meta.get("void", 255))
    if not classes:
        if not problems:
            problems.append(Problem("no class list: give dataset.classes or put a classes.json "
                                    f"({checks.EXAMPLE}) in the dataset root",
                                    paths=(str(meta_path),), structural=True))
        classes = []
    elif meta.get("names") and list(meta["names"]) != list(classes):
        problems.append(Problem(f"dataset.classes {list(classes)} does not match the dataset's "
                                f"classes.json names {meta['names']}", paths=(str(meta_path),),
                                structural=True))
    if "void" in meta and int(meta["void"]) != void:
        problems.append(Problem(f"dataset.void {void} does not match the dataset's classes.json "
                                f"void {meta['void']}", paths=(str(meta_path),), structural=True))
    if any(p.structural for p in problems):
        classes = [c for c in classes if isinstance(c, str)] if isinstance(classes, list) else []
    palette = meta.get("palette") or (voc_colormap(len(classes)) if classes else None)

    scan = Scan(kind, root, list(classes), void, palette, problems=problems)
    scan.label_map, map_problems = checks.parse_label_map(cfg.get("label_map"), len(classes), void)
    scan.problems += [Problem(text, structural=True) for text in map_problems]
    check_class_list(scan)
    read_splits(scan, cfg.get("splits") or {"train": "train.txt", "val": "val.txt"},
                root / "ImageSets" / "Segmentation")
    if any(p.structural for p in scan.problems):
        return scan

    image_dir, mask_dir = root / "JPEGImages", root / "SegmentationClass"
    ids = list(dict.fromkeys(i for split_ids in scan.splits.values() for i in split_ids))
    num_classes, lut = len(scan.classes), scan.label_map
    tasks = {i: (lambda i=i: inspect_image_and_mask(i, find_image(image_dir, i),
                                                     mask_dir / f"{i}.png", num_classes, void, lut))
             for i in ids}
    inspect_many(scan, tasks)
    return scan


def dataset_root(cfg: dict) -> Path:
    """The configured dataset folder, which must exist and be a folder."""
    kind = cfg.get("kind")
    if not cfg.get("root"):
        raise DatasetError(f"{kind} dataset: dataset.root is not set; point it at the dataset folder")
    root = Path(cfg["root"]).expanduser().resolve()
    if root.is_file():
        raise DatasetError(f"{kind} dataset: dataset.root {root} is a file, not a folder; point it "
                           "at the folder that holds the dataset")
    if not root.is_dir():
        raise DatasetError(f"{kind} dataset: root folder {root} does not exist")
    return root


def check_class_list(scan: Scan) -> None:
    """Class names unique, background first in spirit (index 0), void outside the classes."""
    classes = scan.classes
    if not classes:
        return
    if len(set(classes)) != len(classes) and not any("repeat" in p.message for p in scan.problems):
        dups = sorted(c for c, n in Counter(classes).items() if n > 1)
        scan.problems.append(Problem(f"class names repeat: {dups}", structural=True))
    if len(classes) > 255:
        scan.problems.append(Problem(f"{len(classes)} classes do not fit uint8 masks", structural=True))
    if not 0 <= scan.void <= 255 or scan.void < len(classes):
        scan.problems.append(Problem(f"void index {scan.void} must be in {len(classes)}..255 "
                                     "(outside the class indices)", structural=True))


def read_splits(scan: Scan, splits: dict[str, str], list_dir: Path) -> None:
    """Fill ``scan.splits`` from list files; a missing or malformed list file is structural."""
    for split, list_name in splits.items():
        path = list_dir / list_name
        scan.split_sources[split] = str(path)
        if not path.is_file():
            what = "is a folder, not a file" if path.is_dir() else "is missing"
            scan.problems.append(Problem(f"list file for split {split!r} {what}",
                                         paths=(str(path),), structural=True))
            continue
        scan.splits[split] = read_list_file(path, scan.problems)


# ------------------------------------------------------------- validate and write


# Kinds whose readers build a fixed set of splits (dataset.splits only names which exist).
FIXED_SPLITS = {"voc12": ("train_aug", "train", "val"), "coco14": ("train", "val")}


def build_index(dataset_cfg: dict, out_dir: Path, mask_dir: Path | None = None) -> "DatasetIndex":
    """Read, validate and index a dataset into ``out_dir``; returns the loaded index.

    ``dataset_cfg``: ``kind`` (voc_layout | synthetic | voc12 | coco14), ``root``,
    ``classes``, ``void``, ``splits``, ``train_split``, ``eval_split``,
    ``on_bad_item`` (error | skip); the real-dataset kinds read a few more keys
    (see their modules). ``mask_dir``: where masks rendered later (COCO
    shards) will live, default ``out_dir``; the index refers to them there.
    """
    kind = dataset_cfg.get("kind")
    if kind in ("voc_layout", "synthetic"):
        scan = scan_voc_layout(dataset_cfg)
    elif kind == "voc12":
        from .voc import scan_voc12
        scan = scan_voc12(dataset_cfg, Path(out_dir))
    elif kind == "coco14":
        from .coco import scan_coco14
        scan = scan_coco14(dataset_cfg, Path(out_dir), None if mask_dir is None else Path(mask_dir))
    else:
        raise DatasetError(f"dataset.kind {kind!r} is not one of voc_layout, synthetic, voc12, coco14")
    return finish_index(scan, dataset_cfg, Path(out_dir))


def finish_index(scan: Scan, cfg: dict, out_dir: Path) -> "DatasetIndex":
    """Split-level checks, the error/skip decision, then the atomic write."""
    on_bad_item = cfg.get("on_bad_item", "error")
    if on_bad_item not in ("error", "skip"):
        raise DatasetError(f"dataset.on_bad_item must be 'error' or 'skip', got {on_bad_item!r}")
    train_split = cfg.get("train_split") or scan.default_train_split
    known = list(dict.fromkeys([*scan.splits, *scan.split_sources]))
    if known and train_split not in known:
        scan.problems.append(Problem(f"train_split {train_split!r} is not one of the splits {known}",
                                     structural=True))
    eval_split = cfg.get("eval_split")
    if known and eval_split and eval_split not in known and eval_split != train_split:
        scan.problems.append(Problem(f"eval_split {eval_split!r} is not one of the splits {known}",
                                     structural=True))
    if scan.kind in FIXED_SPLITS:
        for name in cfg.get("splits") or {}:
            if name not in known and name not in (train_split, eval_split):
                scan.problems.append(Problem(
                    f"dataset.splits names {name!r}, which {scan.kind} does not build (it builds "
                    f"{', '.join(FIXED_SPLITS[scan.kind])}; the list-file values are not read)",
                    structural=True))
    if cfg.get("label_map") and scan.kind in FIXED_SPLITS:
        scan.problems.append(Problem(f"dataset.label_map is for voc_layout datasets; {scan.kind} "
                                     "masks have fixed class indices", structural=True))
    max_side = cfg.get("max_side")
    if max_side is not None and (isinstance(max_side, bool) or not isinstance(max_side, int)
                                 or max_side < 32):
        scan.problems.append(Problem(f"dataset.max_side must be an integer >= 32 or null, got "
                                     f"{max_side!r}", structural=True))
        max_side = None
    _check_foreign_values(scan)
    _check_duplicates(scan)
    for image_id in scan.splits.get(train_split, []):
        item = scan.items.get(image_id)
        if item is not None and not item.labels:
            scan.problems.append(Problem(
                f"no foreground label in the training split {train_split!r} "
                f"(mask has only background/void)", image_id, (item.mask or item.image,),
                splits=(train_split,)))
    _check_sanity(scan, train_split, cfg.get("sanity", "error"))
    _check_sizes(scan, max_side)

    header = f"{scan.kind} dataset at {scan.root}"
    structural = [p for p in scan.problems if p.structural]
    if structural or (scan.problems and on_bad_item == "error"):
        hint = "" if structural else " (set dataset.on_bad_item: skip to drop bad items instead)"
        raise DatasetError(f"{header} is not usable{hint}", structural + [p for p in scan.problems
                                                                          if not p.structural])
    splits = _drop_bad_items(scan)
    if not splits.get(train_split):
        raise DatasetError(f"{header}: the training split {train_split!r} has no usable images",
                           scan.problems)
    _check_skip_share(scan, splits, cfg.get("max_skip_fraction", DEFAULT_MAX_SKIP_FRACTION), header)
    if scan.problems:
        warnings.warn(f"{header}: skipped {len(scan.problems)} bad item(s); "
                      f"see {Path(out_dir) / 'report.md'}", stacklevel=2)
    for text in scan.warnings:
        warnings.warn(f"{header}: {text}", stacklevel=2)
    _write_outputs(scan, splits, Path(out_dir), max_side)
    return DatasetIndex.load(out_dir)


def _check_foreign_values(scan: Scan) -> None:
    """Values beyond the class list in many masks: one class-list problem, not many bad items."""
    if not scan.masks_checked or not scan.foreign_values:
        return
    message = checks.class_list_problem(dict(scan.foreign_values), scan.masks_with_foreign,
                                        scan.masks_checked, scan.classes, scan.void, scan.void_masks)
    if message:
        # One problem instead of one per mask: the ids would only bury the cause.
        examples = [p for p in scan.problems if p.foreign]
        scan.problems = [p for p in scan.problems if not p.foreign]
        shown = "; ".join(str(p) for p in examples[:3])
        scan.problems.append(Problem(f"{message}. For example: {shown}", structural=True))


def _check_sanity(scan: Scan, train_split: str, mode: str) -> None:
    """A foreground class in (nearly) every training image stops the build (``sanity: warn``:
    a warning instead)."""
    if mode not in ("error", "warn"):
        scan.problems.append(Problem(f"dataset.sanity must be 'error' or 'warn', got {mode!r}",
                                     structural=True))
        return
    train = [scan.items[i] for i in dict.fromkeys(scan.splits.get(train_split, []))
             if i in scan.items]
    counts = Counter(c for item in train for c in item.labels)
    for text in checks.sanity_problems(counts, len(train), train_split, scan.classes, scan.void,
                                       scan.void_masks, scan.masks_checked):
        if mode == "error":
            scan.problems.append(Problem(text, structural=True))
        else:
            scan.warnings.append(text)


def _check_sizes(scan: Scan, max_side: int | None) -> None:
    """Name the images read downscaled (or, without max_side, those large enough to exhaust
    memory in CAM inference) and those whose EXIF orientation is applied."""
    limit = max_side or LARGE_SIDE
    large = [(i, item) for i, item in scan.items.items() if max(item.height, item.width) > limit]
    if large:
        shown = ", ".join(f"{i!r} ({item.width}x{item.height})" for i, item in large[:10])
        more = f" and {len(large) - 10} more" if len(large) > 10 else ""
        if max_side:
            scan.warnings.append(f"{len(large)} image(s) are larger than dataset.max_side "
                                 f"{max_side} and are read downscaled (masks with them): "
                                 f"{shown}{more}")
        else:
            scan.warnings.append(f"{len(large)} image(s) have a side over {LARGE_SIDE} px: "
                                 f"{shown}{more}. CAM inference holds each image at up to 2x its "
                                 "size (a 4000x3000 photo peaks near 10 GB); set dataset.max_side "
                                 "(e.g. 1024) to read them downscaled")
    if scan.rotated:
        shown = ", ".join(repr(i) for i in scan.rotated[:10])
        more = f" and {len(scan.rotated) - 10} more" if len(scan.rotated) > 10 else ""
        scan.warnings.append(f"EXIF orientation applied to {len(scan.rotated)} image(s): every step "
                             f"reads them upright, and their masks match the upright size: "
                             f"{shown}{more}")


def _check_skip_share(scan: Scan, splits: dict[str, list[str]], fraction, header: str) -> None:
    """``skip`` may drop at most ``dataset.max_skip_fraction`` of any split."""
    for split, ids in scan.splits.items():
        listed = len(dict.fromkeys(ids))
        dropped = listed - len(splits.get(split, []))
        if listed and dropped > fraction * listed:
            raise DatasetError(
                f"{header}: on_bad_item: skip would drop {dropped} of {listed} images of split "
                f"{split!r} ({100 * dropped / listed:.0f}%), more than dataset.max_skip_fraction "
                f"{fraction} allows. So many bad items usually mean one mistake (class list, void "
                "index, layout) rather than bad images: fix it, or raise dataset.max_skip_fraction",
                scan.problems)


def _check_duplicates(scan: Scan) -> None:
    for split, ids in scan.splits.items():
        for image_id, count in Counter(ids).items():
            if count > 1:
                scan.problems.append(Problem(f"listed {count} times in split {split!r}", image_id,
                                             (scan.split_sources.get(split, ""),), splits=(split,),
                                             duplicate=True))


def _drop_bad_items(scan: Scan) -> dict[str, list[str]]:
    """Splits without bad items; duplicates keep their first occurrence."""
    bad_everywhere = {p.image_id for p in scan.problems if p.splits is None}
    bad_in = {(s, p.image_id) for p in scan.problems if p.splits and not p.duplicate
              for s in p.splits}
    return {split: [i for i in dict.fromkeys(ids)
                    if i in scan.items and i not in bad_everywhere and (split, i) not in bad_in]
            for split, ids in scan.splits.items()}


def _write_outputs(scan: Scan, splits: dict[str, list[str]], out_dir: Path,
                   max_side: int | None = None) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {"names": scan.classes, "void": scan.void, "palette": scan.palette}
    # Read by DatasetIndex: every step applies them to images and masks alike.
    if max_side:
        meta["max_side"] = max_side
    if scan.label_map is not None:
        meta["label_map"] = checks.lut_to_json(scan.label_map)
    _atomic_write(out_dir / "classes.json", json.dumps(meta, indent=1) + "\n")
    _atomic_write(out_dir / "report.md", _report(scan, splits))
    tmp = out_dir / f"index.csv.tmp-{os.getpid()}"
    with open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(INDEX_COLUMNS)
        for split, ids in splits.items():
            for image_id in ids:
                item = scan.items[image_id]
                writer.writerow([split, image_id, " ".join(map(str, item.labels)), item.height,
                                 item.width, item.image, item.mask])
    os.replace(tmp, out_dir / "index.csv")


def publish_index(plan_dir: str | os.PathLike, out_dir: str | os.PathLike) -> "DatasetIndex":
    """Copy a finished plan's ``index.csv``/``classes.json``/``report.md`` to ``out_dir``.

    For datasets whose masks are rendered after indexing (COCO): the index the
    later steps read appears only once its masks exist. Each file is written
    atomically; ``index.csv`` last, so its presence means the set is complete.
    """
    plan_dir, out_dir = Path(plan_dir), Path(out_dir)
    DatasetIndex.load(plan_dir)  # complete and readable
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ("classes.json", "report.md", "index.csv"):
        source = plan_dir / name
        if source.is_file():
            target = out_dir / name
            tmp = target.with_name(f"{name}.tmp-{os.getpid()}")
            tmp.write_bytes(source.read_bytes())
            os.replace(tmp, target)
    return DatasetIndex.load(out_dir)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _report(scan: Scan, splits: dict[str, list[str]]) -> str:
    names = list(splits)
    lines = [f"# Dataset index: {scan.kind}", "",
             f"- root: `{scan.root}`",
             f"- classes: {len(scan.classes)} including background; void = {scan.void}"]
    if scan.label_map is not None:
        lines.append(f"- label map (raw mask value -> class index): {checks.lut_to_json(scan.label_map)}")
    lines.append("")
    lines += ["## Images per split", "", "| split | images | with mask | list file |",
              "|---|---:|---:|---|"]
    for split in names:
        with_mask = sum(1 for i in splits[split] if scan.items[i].mask)
        lines.append(f"| {split} | {len(splits[split])} | {with_mask} | "
                     f"`{scan.split_sources.get(split, '')}` |")
    lines += ["", "## Images per class (image-level labels)", "",
              "| class | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    counts = {s: Counter(c for i in splits[s] for c in scan.items[i].labels) for s in names}
    for index, name in enumerate(scan.classes[1:], start=1):
        lines.append(f"| {name} | " + " | ".join(str(counts[s][index]) for s in names) + " |")
    lines += ["", f"## Skipped items ({len(scan.problems)})", ""]
    lines += [f"- {p}" + (f" (split {', '.join(p.splits)})" if p.splits else "") for p in scan.problems]
    if not scan.problems:
        lines.append("None.")
    if scan.left_out:
        lines += ["", f"## Left out by design ({len(scan.left_out)})", ""]
        lines += [f"- {entry}" for entry in scan.left_out]
    if scan.warnings:
        lines += ["", f"## Warnings ({len(scan.warnings)})", ""] + [f"- {w}" for w in scan.warnings]
    if scan.notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in scan.notes]
    return "\n".join(lines) + "\n"


