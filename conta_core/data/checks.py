"""Dataset-wide checks: classes.json, class names, the label map, and label sanity.

Why apart from the per-item checks in :mod:`.index`: these find mistakes in
what the *user declared* (a class list one short, void given as a class, a
malformed classes.json), which no amount of skipping bad images can fix. Each
returns messages naming the file or key and what to change.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

# A foreground class in at least this share of the training images leaves the
# classifier (image-level labels) no negative examples: flagged, and the build
# stops unless dataset.sanity is "warn". Only checked from this many images on.
UBIQUITOUS_SHARE = 0.95
SANITY_MIN_IMAGES = 20
# Masks with values beyond the class list in at least this many masks and this
# share of them mean the class list (or void index) is wrong, not the images.
CLASS_LIST_MIN_MASKS = 3
CLASS_LIST_MIN_SHARE = 0.10
CLASSES_JSON_KEYS = ("names", "void", "palette")
EXAMPLE = '{"names": ["background", "cat", ...], "void": 255}'


def class_name_problems(names, source: str) -> list[str]:
    """Problems of a class list (``source`` names where it came from)."""
    if not isinstance(names, list) or not names:
        return [f"{source}: class names must be a non-empty list of strings, got {names!r}"]
    problems = []
    wrong = [(i, n) for i, n in enumerate(names) if not isinstance(n, str) or not n.strip()]
    if wrong:
        shown = ", ".join(f"#{i} {n!r}" for i, n in wrong[:5])
        problems.append(f"{source}: every class name must be a non-empty string; not so: {shown} "
                        "(quote names YAML would read as booleans or numbers, e.g. \"no\", \"2024\")")
    if len(names) < 2:
        problems.append(f"{source}: {len(names)} class name(s); give background first and at "
                        "least one foreground class")
    hashable = [n for n in names if isinstance(n, str)]
    dups = sorted(n for n, k in Counter(hashable).items() if k > 1)
    if dups:
        problems.append(f"{source}: class names repeat: {dups}")
    return problems


def read_classes_json(path: Path) -> tuple[dict, list[str]]:
    """The dataset's classes.json as a dict, and every way it breaks the schema.

    Schema: an object with ``names`` (non-empty list of unique strings,
    background first), optional ``void`` (integer 0..255) and ``palette``
    (list of [r, g, b], integers 0..255); no other keys.
    """
    where = str(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        return {}, [f"{where} is not UTF-8 text (binary?) - byte {err.start}; expected JSON "
                    f"like {EXAMPLE}"]
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as err:
        return {}, [f"{where} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}); "
                    f"expected {EXAMPLE}"]
    if not isinstance(meta, dict):
        hint = " - a list of names? write it as {\"names\": [...]}" if isinstance(meta, list) else ""
        return {}, [f"{where} must hold a JSON object like {EXAMPLE}, got a "
                    f"{type(meta).__name__}{hint}"]
    problems = []
    unknown = sorted(set(meta) - set(CLASSES_JSON_KEYS))
    if unknown:
        problems.append(f"{where}: unknown key(s) {unknown}; allowed: {list(CLASSES_JSON_KEYS)}")
    if "names" in meta:
        problems += class_name_problems(meta["names"], f"{where} names")
    if "void" in meta and not _is_byte(meta["void"]):
        problems.append(f"{where}: void must be an integer 0..255 (the mask value to ignore), "
                        f"got {meta['void']!r}")
    palette = meta.get("palette")
    if palette is not None and not (isinstance(palette, list) and all(
            isinstance(c, list) and len(c) == 3 and all(_is_byte(v) for v in c) for c in palette)):
        problems.append(f"{where}: palette must be a list of [r, g, b] colours (integers 0..255)")
    return (meta if not problems else {}), problems


def _is_byte(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 255


def parse_label_map(label_map, num_classes: int, void: int) -> tuple[np.ndarray | None, list[str]]:
    """``dataset.label_map`` (raw mask value -> class index or "void") as a 256-entry
    lookup table (None when empty), and its problems. Unmapped values stay as they are."""
    if not label_map:
        return None, []
    if not isinstance(label_map, dict):
        return None, [f"dataset.label_map must map raw mask values to class indices or \"void\", "
                      f"got {label_map!r}"]
    lut = np.arange(256, dtype=np.uint8)
    problems = []
    for key, value in label_map.items():
        raw = int(key) if isinstance(key, int) or (isinstance(key, str) and key.isdigit()) else None
        if raw is None or isinstance(key, bool) or not 0 <= raw <= 255:
            problems.append(f"dataset.label_map key {key!r} is not a mask value 0..255")
            continue
        if value == "void" or (_is_byte(value) and value == void):
            lut[raw] = void
        elif _is_byte(value) and value < num_classes:
            lut[raw] = value
        else:
            problems.append(f"dataset.label_map[{key}] = {value!r} is neither a class index "
                            f"0..{num_classes - 1} nor \"void\"")
    return (lut if not problems else None), problems


def lut_to_json(lut: np.ndarray | None) -> dict[str, int] | None:
    """The changed entries of a lookup table, as classes.json of the index stores them."""
    if lut is None:
        return None
    return {str(v): int(lut[v]) for v in range(256) if lut[v] != v}


def lut_from_json(entries: dict | None) -> np.ndarray | None:
    if not entries:
        return None
    lut = np.arange(256, dtype=np.uint8)
    for key, value in entries.items():
        lut[int(key)] = int(value)
    return lut


def class_list_problem(foreign_masks: dict[int, int], masks_with_foreign: int, masks_checked: int,
                       classes: list[str], void: int, void_masks: int) -> str | None:
    """A message when values beyond the class list are in many masks (None when few).

    ``foreign_masks``: value -> number of masks holding it; ``masks_with_foreign``:
    masks holding any. Many such masks are a class-list problem: skipping them
    as bad images would throw away a large part of the data for nothing.
    """
    if masks_with_foreign < CLASS_LIST_MIN_MASKS or \
            masks_with_foreign < CLASS_LIST_MIN_SHARE * masks_checked:
        return None
    values = ", ".join(f"{v} ({n} mask{'s' if n != 1 else ''})" for v, n in sorted(foreign_masks.items()))
    highest = max(foreign_masks)
    message = (f"{masks_with_foreign} of {masks_checked} masks hold values beyond the class list - "
               f"{values}; the class list has {len(classes)} names (indices 0..{len(classes) - 1}) "
               f"and void is {void}. This is a class-list problem, not {masks_with_foreign} bad "
               f"images: list all {highest + 1} classes (background first), or map the extra "
               "values with dataset.label_map")
    common = max(foreign_masks, key=foreign_masks.get)
    if void_masks == 0 and foreign_masks[common] * 2 >= masks_checked:
        message += (f"; void {void} never occurs while {common} is in {foreign_masks[common]} "
                    f"masks: is {common} this dataset's void? then set dataset.void: {common}")
    return message


def sanity_problems(label_counts: Counter, train_images: int, train_split: str,
                    classes: list[str], void: int, void_masks: int, masks_checked: int) -> list[str]:
    """Foreground classes in (nearly) every training image, explained.

    ``label_counts``: class index -> training images whose labels hold it;
    ``void_masks``: masks (any split) with a void pixel. The typical cause is a
    class list off by one (CamVid's void 11 listed as a class with void 255).
    """
    if train_images < SANITY_MIN_IMAGES:
        return []
    problems = []
    for index, count in sorted(label_counts.items()):
        if count < UBIQUITOUS_SHARE * train_images:
            continue
        name = classes[index] if index < len(classes) else str(index)
        text = (f"class {index} {name!r} is in {count} of {train_images} images of the training "
                f"split {train_split!r}")
        if void_masks == 0 and masks_checked:
            text += (f", while the declared void {void} never occurs in any mask: value {index} is "
                     f"probably the void label (a class list off by one?). Set dataset.void: "
                     f"{index} and list only the real classes, or map it with dataset.label_map: "
                     f"{{{index}: void}}")
        else:
            text += (": with image-level labels the classifier has no image without it to learn "
                     "the class from. If it is background or void, map it with dataset.label_map")
        problems.append(text + " (dataset.sanity: warn goes on regardless)")
    return problems
