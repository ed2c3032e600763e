"""Per-item building blocks of indexing: what a dataset reader found, and the checks of one item.

Split from :mod:`.index` (which validates a whole dataset and writes the index);
the dataset readers (:mod:`.index`'s VOC layout, :mod:`.voc`, :mod:`.coco`)
share these. Images are checked upright (EXIF orientation applied), as
:mod:`.images` reads them for every step.
"""
from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from .images import ORIENTATION_NAMES, SWAPPING, orientation, upright_size
from .reader import DatasetError, Item

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


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
    foreign: bool = False  # mask values beyond the class list (folded into a class-list problem)

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
    # out-of-range mask value -> number of masks holding it; values beyond the
    # class list in many masks mean the class list is wrong, not the items.
    foreign_values: Counter = field(default_factory=Counter)
    masks_with_foreign: int = 0
    masks_checked: int = 0
    void_masks: int = 0  # masks holding the void value at least once
    label_map: np.ndarray | None = None  # dataset.label_map as a lookup table
    rotated: list[str] = field(default_factory=list)  # ids whose EXIF orientation was applied
    warnings: list[str] = field(default_factory=list)  # shown at indexing and in report.md


def decode_image(path: Path) -> tuple[tuple[int, int] | None, str | None]:
    """Upright (width, height) of a fully decoded image, or an error text (missing, truncated, ...)."""
    size, _, error = decode_image_oriented(path)
    return size, error


def decode_image_oriented(path: Path) -> tuple[tuple[int, int] | None, int, str | None]:
    """(upright width, height; EXIF orientation 1..8; error text) of a fully decoded image."""
    if not path.is_file():
        return None, 1, "image file is missing"
    try:
        with Image.open(path) as image:
            image.load()
            orient = orientation(image)
            return upright_size(image.size, orient), orient, None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        return None, 1, f"image cannot be decoded ({type(err).__name__}: {err})"


def mask_labels(mask: np.ndarray, num_classes: int, void: int
                ) -> tuple[tuple[int, ...], list[int], bool]:
    """(foreground labels present, values that are neither a class nor void, void present)."""
    counts = np.bincount(mask.ravel(), minlength=256)
    present = np.flatnonzero(counts)
    labels = tuple(int(v) for v in present if 0 < v < num_classes)
    foreign = [int(v) for v in present if v >= num_classes and v != void]
    return labels, foreign, bool(counts[void])


@dataclass
class Inspection:
    """The outcome of checking one image: the item (None if unusable), its
    problems, mask values that are neither a class nor void, and a mask array
    for the caller to store in HDF5 (formats that are not index PNGs)."""
    item: Item | None
    problems: list[Problem] = field(default_factory=list)
    foreign: list[int] = field(default_factory=list)
    array: np.ndarray | None = None
    has_void: bool = False
    orientation: int = 1
    warnings: list[str] = field(default_factory=list)


def bad(image_id: str, message: str, *paths: Path | str) -> Inspection:
    return Inspection(None, [Problem(message, image_id, tuple(str(p) for p in paths))])


def inspect_image_and_mask(image_id: str, image_path: Path, mask_path: Path | None,
                           num_classes: int, void: int,
                           label_map: np.ndarray | None = None) -> Inspection:
    """Decode one image and its index-PNG mask (None: no mask) and check they agree.

    The mask must match the *upright* image (EXIF orientation applied, as every
    step reads it); ``label_map`` is applied to the mask before its values are checked.
    """
    size, orient, error = decode_image_oriented(image_path)
    if error:
        return bad(image_id, error, image_path)
    width, height = size
    if mask_path is None:
        return Inspection(Item(str(image_path), "", height, width, ()), orientation=orient)
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
        if orient in SWAPPING and mask_size == (height, width):
            return bad(image_id, f"mask is {mask_size[0]}x{mask_size[1]}, the size of the image's "
                       f"stored pixels, but the image's EXIF orientation ({orient}, "
                       f"{ORIENTATION_NAMES[orient]}) makes it {width}x{height} as every step reads "
                       "it: the mask was drawn on the unrotated pixels. Rotate the mask the same "
                       "way, or remove the orientation tag from the image", image_path, mask_path)
        turned = " (the image's size turned 90 degrees)" if mask_size == (height, width) else ""
        return bad(image_id, f"mask is {mask_size[0]}x{mask_size[1]} but the image is "
                   f"{width}x{height} (width x height){turned}", image_path, mask_path)
    if label_map is not None:
        mask = label_map[mask]
    found = check_mask_values(image_id, Item(str(image_path), str(mask_path), height, width, ()),
                              mask, num_classes, void)
    found.orientation = orient
    if orient != 1 and width == height:
        found.warnings.append(f"id {image_id!r}: EXIF orientation {orient} "
                              f"({ORIENTATION_NAMES[orient]}) applied to a square image, so its "
                              f"mask's size cannot tell whether the mask was drawn upright; check "
                              f"it [{image_path}]")
    return found


def check_mask_values(image_id: str, item: Item, mask: np.ndarray, num_classes: int,
                      void: int) -> Inspection:
    """The item with its mask-derived labels, or a problem naming the foreign values."""
    labels, foreign, has_void = mask_labels(mask, num_classes, void)
    if foreign:
        found = bad(image_id, f"mask has values {foreign} that are neither a class index "
                    f"(0..{num_classes - 1}) nor void ({void})", item.mask or item.image)
        found.problems = [replace(p, foreign=True) for p in found.problems]
        found.foreign = foreign
        found.has_void = has_void
        return found
    return Inspection(replace(item, labels=labels), has_void=has_void)


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
                scan.warnings.extend(found.warnings)
                scan.foreign_values.update(set(found.foreign))
                scan.masks_with_foreign += bool(found.foreign)
                scan.void_masks += found.has_void
                if found.orientation != 1:
                    scan.rotated.append(image_id)
                if found.foreign or (found.item is not None and found.item.mask):
                    scan.masks_checked += 1
                if found.item is not None:
                    scan.items[image_id] = found.item
                    if found.array is not None and store_array is not None:
                        store_array(image_id, found.array)


def read_list_file(path: Path, problems: list[Problem] | None = None) -> list[str]:
    """Ids from a list file, one per line.

    A line of two path tokens (``/JPEGImages/x.jpg /SegmentationClassAug/x.png``,
    the train_aug style) gives the first one's stem. Any other line with
    whitespace inside is refused (appended to ``problems``, naming the file and
    line; raised as :class:`DatasetError` when ``problems`` is None): an id
    must never be silently cut at its first space.
    """
    ids, found = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(),
                                  start=1):
        text = line.strip()
        if not text:
            continue
        tokens = text.split()
        if len(tokens) == 2 and all(_is_path_token(t) for t in tokens):
            ids.append(Path(tokens[0]).stem)
        elif len(tokens) > 1:
            found.append(Problem(f"line {number}: {text!r} holds whitespace; a list file has one "
                                 "image id per line, and ids must not contain spaces (rename the "
                                 "image and its mask)", paths=(str(path),), structural=True))
        elif _is_path_token(text):
            ids.append(Path(text).stem)
        else:
            ids.append(text)
    if found and problems is None:
        raise DatasetError(f"list file {path} is malformed", found)
    if problems is not None:
        problems.extend(found)
    return ids


def _is_path_token(token: str) -> bool:
    return "/" in token or token.lower().endswith(IMAGE_SUFFIXES)


def find_image(folder: Path, image_id: str) -> Path:
    """``folder/<id>.jpg`` or the first other image suffix that exists (the .jpg path if none)."""
    for suffix in IMAGE_SUFFIXES:
        candidate = folder / f"{image_id}{suffix}"
        if candidate.is_file():
            return candidate
    return folder / f"{image_id}.jpg"
