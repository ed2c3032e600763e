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
instead, but structural problems (a missing list file, a class list that does
not match the dataset) always stop the build. Validation decodes every image
and mask (that is what catches truncated JPEGs), so on a large dataset it
takes a while; it runs once per dataset.
"""
from __future__ import annotations

import csv
import json
import os
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from PIL import Image

from ..store import MapReader
from .palette import voc_colormap

INDEX_COLUMNS = ["split", "id", "labels", "height", "width", "image", "mask"]
H5_PREFIX = "h5:"
GT_MASK_KIND = "gt_mask"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class DatasetError(ValueError):
    """A dataset or index is unusable; the message lists every problem found.

    ``problems`` holds the individual lines for programmatic use.
    """

    def __init__(self, header: str, problems: Iterable[str] = ()):
        self.problems = [str(p) for p in problems]
        text = header
        if self.problems:
            text += f" ({len(self.problems)} problem{'s' if len(self.problems) != 1 else ''}):\n"
            text += "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(text)


# ---------------------------------------------------------------- building blocks


@dataclass(frozen=True)
class Item:
    """One image as the index stores it (paths absolute; ``mask`` may be '' or 'h5:<file>')."""
    image: str
    mask: str
    height: int
    width: int
    labels: tuple[int, ...]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset.

    ``splits`` None means the item is bad wherever it is listed; otherwise it
    is bad only in those splits (e.g. no labels in the training split).
    ``structural`` problems cannot be skipped; skipping a ``duplicate`` keeps
    the id's first occurrence.
    """
    message: str
    image_id: str | None = None
    paths: tuple[str, ...] = ()
    splits: tuple[str, ...] | None = None
    structural: bool = False
    duplicate: bool = False

    def __str__(self) -> str:
        where = f"id {self.image_id!r}: " if self.image_id is not None else ""
        files = f" [{', '.join(self.paths)}]" if self.paths else ""
        return f"{where}{self.message}{files}"


@dataclass
class Scan:
    """What a dataset reader found; :func:`finish_index` validates and writes it."""
    kind: str
    root: Path
    classes: list[str]
    void: int
    palette: list[list[int]] | None
    splits: dict[str, list[str]] = field(default_factory=dict)
    split_sources: dict[str, str] = field(default_factory=dict)
    items: dict[str, Item] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)  # dropped by design (not errors), with why
    default_train_split: str = "train"
    # out-of-range mask value -> number of masks holding it; a value common to
    # many masks means the class list or void index is wrong, not the items.
    foreign_values: Counter = field(default_factory=Counter)
    masks_checked: int = 0


def decode_image(path: Path) -> tuple[tuple[int, int] | None, str | None]:
    """(width, height) of a fully decoded image, or an error text (missing, truncated, ...)."""
    if not path.is_file():
        return None, "image file is missing"
    try:
        with Image.open(path) as image:
            image.load()
            return image.size, None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        return None, f"image cannot be decoded ({type(err).__name__}: {err})"


def mask_labels(mask: np.ndarray, num_classes: int, void: int) -> tuple[tuple[int, ...], list[int]]:
    """(foreground labels present, values that are neither a class nor void)."""
    counts = np.bincount(mask.ravel(), minlength=256)
    present = np.flatnonzero(counts)
    labels = tuple(int(v) for v in present if 0 < v < num_classes)
    foreign = [int(v) for v in present if v >= num_classes and v != void]
    return labels, foreign


@dataclass
class Inspection:
    """The outcome of checking one image: the item (None if unusable), its
    problems, mask values that are neither a class nor void, and a mask array
    for the caller to store in HDF5 (formats that are not index PNGs)."""
    item: Item | None
    problems: list[Problem] = field(default_factory=list)
    foreign: list[int] = field(default_factory=list)
    array: np.ndarray | None = None


def bad(image_id: str, message: str, *paths: Path | str) -> Inspection:
    return Inspection(None, [Problem(message, image_id, tuple(str(p) for p in paths))])


def inspect_image_and_mask(image_id: str, image_path: Path, mask_path: Path | None,
                           num_classes: int, void: int) -> Inspection:
    """Decode one image and its index-PNG mask (None: no mask) and check they agree."""
    size, error = decode_image(image_path)
    if error:
        return bad(image_id, error, image_path)
    width, height = size
    if mask_path is None:
        return Inspection(Item(str(image_path), "", height, width, ()))
    if not mask_path.is_file():
        return bad(image_id, "mask file is missing", mask_path)
    try:
        with Image.open(mask_path) as mask_image:
            mask_image.load()
            mode, mask_size = mask_image.mode, mask_image.size
            mask = np.asarray(mask_image) if mode in ("P", "L") else None
    except (OSError, SyntaxError, ValueError) as err:
        return bad(image_id, f"mask cannot be decoded ({type(err).__name__}: {err})", mask_path)
    if mask is None:
        return bad(image_id, f"mask is a mode {mode!r} PNG; expected a palette ('P') or greyscale "
                   "('L') PNG whose pixel values are class indices", mask_path)
    if mask_size != (width, height):
        return bad(image_id, f"mask is {mask_size[0]}x{mask_size[1]} but the image is "
                   f"{width}x{height} (width x height)", image_path, mask_path)
    return check_mask_values(image_id, Item(str(image_path), str(mask_path), height, width, ()),
                             mask, num_classes, void)


def check_mask_values(image_id: str, item: Item, mask: np.ndarray, num_classes: int,
                      void: int) -> Inspection:
    """The item with its mask-derived labels, or a problem naming the foreign values."""
    labels, foreign = mask_labels(mask, num_classes, void)
    if foreign:
        found = bad(image_id, f"mask has values {foreign} that are neither a class index "
                    f"(0..{num_classes - 1}) nor void ({void})", item.mask or item.image)
        found.foreign = foreign
        return found
    return Inspection(replace(item, labels=labels))


def inspect_many(scan: Scan, tasks: dict[str, Callable[[], Inspection]],
                 store_array: Callable[[str, np.ndarray], None] | None = None) -> None:
    """Run per-item inspections on a few threads (image decoding releases the GIL).

    Batches bound the memory held by finished but unconsumed results; arrays
    go to ``store_array`` in id order, on this thread (HDF5 writers are not
    thread-safe).
    """
    workers = max(1, min(8, os.cpu_count() or 1))
    ids = list(tasks)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(ids), 64 * workers):
            batch = ids[start:start + 64 * workers]
            for image_id, found in zip(batch, pool.map(lambda i: tasks[i](), batch)):
                scan.problems.extend(found.problems)
                scan.foreign_values.update(set(found.foreign))
                if found.foreign or (found.item is not None and found.item.mask):
                    scan.masks_checked += 1
                if found.item is not None:
                    scan.items[image_id] = found.item
                    if found.array is not None and store_array is not None:
                        store_array(image_id, found.array)


def read_list_file(path: Path) -> list[str]:
    """Ids from a VOC list file: the first token per line; a path token
    (``/JPEGImages/x.jpg /SegmentationClassAug/x.png`` style) gives its stem."""
    ids = []
    for line in path.read_text().splitlines():
        tokens = line.split()
        if not tokens:
            continue
        token = tokens[0]
        if "/" in token or token.lower().endswith(IMAGE_SUFFIXES):
            token = Path(token).stem
        ids.append(token)
    return ids


def find_image(folder: Path, image_id: str) -> Path:
    """``folder/<id>.jpg`` or the first other image suffix that exists (the .jpg path if none)."""
    for suffix in IMAGE_SUFFIXES:
        candidate = folder / f"{image_id}{suffix}"
        if candidate.is_file():
            return candidate
    return folder / f"{image_id}.jpg"


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
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as err:
            problems.append(Problem(f"classes.json is not valid JSON ({err})", paths=(str(meta_path),),
                                    structural=True))
    classes = cfg.get("classes") or meta.get("names")
    void = int(cfg["void"]) if cfg.get("void") is not None else int(meta.get("void", 255))
    if not classes:
        problems.append(Problem("no class list: give dataset.classes or put a classes.json "
                                "({\"names\": [...], \"void\": 255}) in the dataset root",
                                paths=(str(meta_path),), structural=True))
        classes = []
    elif meta.get("names") and list(meta["names"]) != list(classes):
        problems.append(Problem(f"dataset.classes {list(classes)} does not match the dataset's "
                                f"classes.json names {meta['names']}", paths=(str(meta_path),),
                                structural=True))
    if "void" in meta and int(meta["void"]) != void:
        problems.append(Problem(f"dataset.void {void} does not match the dataset's classes.json "
                                f"void {meta['void']}", paths=(str(meta_path),), structural=True))
    palette = meta.get("palette") or (voc_colormap(len(classes)) if classes else None)

    scan = Scan(kind, root, list(classes), void, palette, problems=problems)
    check_class_list(scan)
    read_splits(scan, cfg.get("splits") or {"train": "train.txt", "val": "val.txt"},
                root / "ImageSets" / "Segmentation")
    if any(p.structural for p in scan.problems):
        return scan

    image_dir, mask_dir = root / "JPEGImages", root / "SegmentationClass"
    ids = list(dict.fromkeys(i for split_ids in scan.splits.values() for i in split_ids))
    num_classes = len(scan.classes)
    tasks = {i: (lambda i=i: inspect_image_and_mask(i, find_image(image_dir, i),
                                                     mask_dir / f"{i}.png", num_classes, void))
             for i in ids}
    inspect_many(scan, tasks)
    return scan


def dataset_root(cfg: dict) -> Path:
    """The configured dataset folder, which must exist."""
    kind = cfg.get("kind")
    if not cfg.get("root"):
        raise DatasetError(f"{kind} dataset: dataset.root is not set; point it at the dataset folder")
    root = Path(cfg["root"]).expanduser().resolve()
    if not root.is_dir():
        raise DatasetError(f"{kind} dataset: root folder {root} does not exist")
    return root


def check_class_list(scan: Scan) -> None:
    """Class names unique, background first in spirit (index 0), void outside the classes."""
    classes = scan.classes
    if not classes:
        return
    if len(set(classes)) != len(classes):
        dups = sorted(c for c, n in Counter(classes).items() if n > 1)
        scan.problems.append(Problem(f"class names repeat: {dups}", structural=True))
    if len(classes) > 255:
        scan.problems.append(Problem(f"{len(classes)} classes do not fit uint8 masks", structural=True))
    if not 0 <= scan.void <= 255 or scan.void < len(classes):
        scan.problems.append(Problem(f"void index {scan.void} must be in {len(classes)}..255 "
                                     "(outside the class indices)", structural=True))


def read_splits(scan: Scan, splits: dict[str, str], list_dir: Path) -> None:
    """Fill ``scan.splits`` from list files; a missing list file is structural."""
    for split, list_name in splits.items():
        path = list_dir / list_name
        scan.split_sources[split] = str(path)
        if not path.is_file():
            scan.problems.append(Problem(f"list file for split {split!r} is missing",
                                         paths=(str(path),), structural=True))
            continue
        scan.splits[split] = read_list_file(path)


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
    _check_foreign_values(scan)
    _check_duplicates(scan)
    for image_id in scan.splits.get(train_split, []):
        item = scan.items.get(image_id)
        if item is not None and not item.labels:
            scan.problems.append(Problem(
                f"no foreground label in the training split {train_split!r} "
                f"(mask has only background/void)", image_id, (item.mask or item.image,),
                splits=(train_split,)))

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
    if scan.problems:
        warnings.warn(f"{header}: skipped {len(scan.problems)} bad item(s); "
                      f"see {Path(out_dir) / 'report.md'}", stacklevel=2)
    _write_outputs(scan, splits, Path(out_dir))
    return DatasetIndex.load(out_dir)


def _check_foreign_values(scan: Scan) -> None:
    """A bad mask value shared by at least half the masks is a dataset-wide mismatch."""
    if not scan.masks_checked:
        return
    for value, count in sorted(scan.foreign_values.items()):
        if count * 2 >= scan.masks_checked:
            scan.problems.append(Problem(
                f"mask value {value} appears in {count} of {scan.masks_checked} masks but is neither a "
                f"class index (0..{len(scan.classes) - 1}) nor void ({scan.void}): the class list or "
                "void index does not match this dataset", structural=True))


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


def _write_outputs(scan: Scan, splits: dict[str, list[str]], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {"names": scan.classes, "void": scan.void, "palette": scan.palette}
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
             f"- classes: {len(scan.classes)} including background; void = {scan.void}", ""]
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
    if scan.notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in scan.notes]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- reading an index


class DatasetIndex:
    """Read access to an ``index.csv`` + ``classes.json`` pair (see docs/ARCHITECTURE.md)."""

    def __init__(self, directory: Path, classes: list[str], void: int,
                 palette: list[list[int]] | None, split_ids: dict[str, list[str]],
                 items: dict[str, Item]):
        self.directory = directory
        self.classes = classes
        self.void = void
        self.palette = palette
        self._split_ids = split_ids
        self._items = items
        self._h5: dict[tuple[int, str], MapReader] = {}

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "DatasetIndex":
        directory = Path(directory)
        index_path, classes_path = directory / "index.csv", directory / "classes.json"
        missing = [str(p) for p in (index_path, classes_path) if not p.is_file()]
        if missing:
            raise DatasetError(f"dataset index in {directory} is incomplete; run the dataset_index "
                               "step", [f"missing {p}" for p in missing])
        meta = json.loads(classes_path.read_text())
        split_ids: dict[str, list[str]] = {}
        items: dict[str, Item] = {}
        with open(index_path, newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header != INDEX_COLUMNS:
                raise DatasetError(f"{index_path}: header {header} is not {INDEX_COLUMNS}; "
                                   "the index is from another version, rebuild it")
            for split, image_id, labels, height, width, image, mask in reader:
                split_ids.setdefault(split, []).append(image_id)
                if image_id not in items:
                    items[image_id] = Item(image, mask, int(height), int(width),
                                           tuple(int(v) for v in labels.split()))
        return cls(directory, list(meta["names"]), int(meta["void"]), meta.get("palette"),
                   split_ids, items)

    @property
    def num_classes(self) -> int:
        """Number of classes including the background."""
        return len(self.classes)

    def splits(self) -> list[str]:
        return list(self._split_ids)

    def ids(self, split: str) -> list[str]:
        if split not in self._split_ids:
            raise DatasetError(f"split {split!r} is not in the dataset index {self.directory}; "
                               f"available: {self.splits()}")
        return list(self._split_ids[split])

    def _item(self, image_id: str) -> Item:
        try:
            return self._items[image_id]
        except KeyError:
            raise DatasetError(f"image id {image_id!r} is not in the dataset index "
                               f"{self.directory}") from None

    def labels(self, image_id: str) -> list[int]:
        """Image-level foreground class indices (1..C-1)."""
        return list(self._item(image_id).labels)

    def size(self, image_id: str) -> tuple[int, int]:
        """(height, width)."""
        item = self._item(image_id)
        return item.height, item.width

    def image_path(self, image_id: str) -> Path:
        return Path(self._item(image_id).image)

    def has_mask(self, image_id: str) -> bool:
        return bool(self._item(image_id).mask)

    def mask_shards(self) -> dict[str, list[str]]:
        """HDF5 mask file -> the ids whose masks it holds, in index order.

        The plan for rules that render masks (COCO) shard by shard.
        """
        shards: dict[str, list[str]] = {}
        for image_id, item in self._items.items():
            if item.mask.startswith(H5_PREFIX):
                shards.setdefault(item.mask[len(H5_PREFIX):], []).append(image_id)
        return shards

    def read_image(self, image_id: str) -> np.ndarray:
        """uint8 HxWx3 RGB."""
        with Image.open(self._item(image_id).image) as image:
            return np.asarray(image.convert("RGB"))

    def read_mask(self, image_id: str) -> np.ndarray:
        """uint8 HxW class indices, void kept; palette indices are read as they are."""
        item = self._item(image_id)
        if not item.mask:
            raise DatasetError(f"image id {image_id!r} has no ground-truth mask in {self.directory}")
        if item.mask.startswith(H5_PREFIX):
            path = item.mask[len(H5_PREFIX):]
            if not os.path.exists(path):
                relative = os.path.relpath(path)
                shown = path if relative.startswith("..") else relative
                raise DatasetError(
                    f"mask of {image_id!r} is in {path}, which is missing; render it again with "
                    f"`snakemake {shown}` run in the workflow's directory (path relative to it); "
                    "the index and later results stay valid")
            return self._h5_reader(path).get(image_id)
        with Image.open(item.mask) as mask:
            if mask.mode not in ("P", "L"):
                raise DatasetError(f"mask of {image_id!r} is a mode {mask.mode!r} image, not an index "
                                   f"PNG", [item.mask])
            return np.asarray(mask)

    def _h5_reader(self, path: str) -> MapReader:
        # One open file per process: h5py handles must not cross a fork
        # (data-loader workers), so the cache is keyed by pid.
        key = (os.getpid(), path)
        if key not in self._h5:
            self._h5[key] = MapReader(path, kind=GT_MASK_KIND)
        return self._h5[key]
