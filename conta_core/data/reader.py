"""Reading a dataset index: ids, labels, sizes, images and masks by id.

Split from :mod:`.index` (which builds and validates the index) so that every
step reads images one way: EXIF orientation applied, ``max_side`` downscaling
and the label map recorded at indexing applied to images and masks alike
(:mod:`.images`).
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

from ..store import MapReader
from .images import read_rgb, resize_mask, working_size

INDEX_COLUMNS = ["split", "id", "labels", "height", "width", "image", "mask"]
H5_PREFIX = "h5:"
GT_MASK_KIND = "gt_mask"


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


@dataclass(frozen=True)
class Item:
    """One image as the index stores it (paths absolute; ``mask`` may be '' or 'h5:<file>').

    ``height``/``width`` are the upright (EXIF-applied) size of the image file.
    """
    image: str
    mask: str
    height: int
    width: int
    labels: tuple[int, ...]


# ---------------------------------------------------------------- reading an index


class DatasetIndex:
    """Read access to an ``index.csv`` + ``classes.json`` pair (see docs/ARCHITECTURE.md)."""

    def __init__(self, directory: Path, classes: list[str], void: int,
                 palette: list[list[int]] | None, split_ids: dict[str, list[str]],
                 items: dict[str, Item], max_side: int | None = None,
                 label_map: np.ndarray | None = None):
        self.directory = directory
        self.classes = classes
        self.void = void
        self.palette = palette
        self.max_side = max_side
        self.label_map = label_map  # 256-entry lookup table raw mask value -> class/void, or None
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
        meta = _read_meta(classes_path)
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
        lut = None
        if meta.get("label_map"):
            lut = np.arange(256, dtype=np.uint8)
            for raw, mapped in meta["label_map"].items():
                lut[int(raw)] = int(mapped)
        return cls(directory, list(meta["names"]), int(meta["void"]), meta.get("palette"),
                   split_ids, items, meta.get("max_side"), lut)

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
        """(height, width) at which :meth:`read_image` and :meth:`read_mask` return it
        (the upright image, its longer side capped at ``max_side``)."""
        item = self._item(image_id)
        return working_size(item.height, item.width, self.max_side)

    def original_size(self, image_id: str) -> tuple[int, int]:
        """(height, width) of the upright image file, before any ``max_side`` downscaling."""
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
        """uint8 HxWx3 RGB of :meth:`size`: EXIF orientation applied, downscaled past ``max_side``."""
        return read_rgb(self._item(image_id).image, self.max_side)

    def read_mask(self, image_id: str) -> np.ndarray:
        """uint8 HxW class indices of :meth:`size`, void kept; palette indices are read as
        they are, then the index's label map applied; downscaled by nearest neighbour."""
        mask = self._read_stored_mask(image_id)
        if self.label_map is not None:
            mask = self.label_map[mask]
        return resize_mask(mask, *self.size(image_id))

    def _read_stored_mask(self, image_id: str) -> np.ndarray:
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


def _read_meta(path: Path) -> dict:
    """The index's own classes.json, checked: a damaged one is named, not a KeyError."""
    try:
        meta = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f"{path} is not readable JSON ({err}); rebuild the dataset index") from None
    problems = []
    if not isinstance(meta, dict):
        problems.append(f"holds a {type(meta).__name__}, not an object")
        meta = {}
    names = meta.get("names")
    if not (isinstance(names, list) and len(names) >= 2 and all(isinstance(n, str) for n in names)):
        problems.append(f"names must be a list of at least 2 strings, got {names!r}")
    void = meta.get("void")
    if not (isinstance(void, int) and not isinstance(void, bool) and 0 <= void <= 255):
        problems.append(f"void must be an integer 0..255, got {void!r}")
    max_side = meta.get("max_side")
    if max_side is not None and not (isinstance(max_side, int) and max_side > 0):
        problems.append(f"max_side must be a positive integer or null, got {max_side!r}")
    label_map = meta.get("label_map") or {}
    if not (isinstance(label_map, dict) and all(
            str(k).isdigit() and int(k) < 256 and isinstance(v, int) and 0 <= v <= 255
            for k, v in label_map.items())):
        problems.append(f"label_map must map mask values 0..255 to 0..255, got {label_map!r}")
    if problems:
        raise DatasetError(f"{path} is not a dataset index's classes.json; rebuild the dataset index",
                           problems)
    return meta
