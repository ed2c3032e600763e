"""HDF5 artifact store: the one module that reads and writes per-image maps.

Every artifact (CAMs, pseudo-masks, IR labels, predicted masks, confounder
tensors) is one HDF5 file with one dataset per image under ``/items``, chunked
and gzip-compressed, so a single image is read without touching the rest.

Writes are atomic: a writer fills ``<name>.tmp-<pid>`` beside the target and
renames it over the target only when the ``with`` block exits cleanly, after
setting ``complete = True``. A killed job therefore never leaves a file that
looks finished. The root attributes record what made the file (kind, round,
step, config digest, class names, package version) so a stale or foreign file
is caught when it is opened.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import h5py
import numpy as np

from . import __version__

FORMAT = "conta-maps/1"


class StoreError(RuntimeError):
    """An artifact file is missing, incomplete, foreign or stale."""


def digest(obj: Any) -> str:
    """Stable short digest of a JSON-able object (config sections, id lists)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _key(image_id: str) -> str:
    # HDF5 treats '/' as a group separator; ids are flat names.
    return image_id.replace("/", "|")


def _unkey(key: str) -> str:
    return key.replace("|", "/")


def _encode_attr(value: Any) -> Any:
    if isinstance(value, (list, tuple, dict)):
        return "json:" + json.dumps(value)
    if value is None:
        return "json:null"
    return value


def _decode_attr(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str) and value.startswith("json:"):
        return json.loads(value[5:])
    if isinstance(value, np.generic):
        return value.item()
    return value


class MapWriter:
    """Write per-image arrays into one HDF5 file, atomically.

    ``attrs`` go on the root (provenance); ``put`` adds one image's array.
    """

    def __init__(self, path: str | os.PathLike, *, kind: str, attrs: dict | None = None,
                 compression_level: int = 4):
        self.path = Path(path)
        self.kind = kind
        self.attrs = dict(attrs or {})
        self.compression_level = compression_level
        self._tmp = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
        self._file: h5py.File | None = None
        self._items: h5py.Group | None = None

    def __enter__(self) -> "MapWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = h5py.File(self._tmp, "w")
        root = self._file.attrs
        root["format"] = FORMAT
        root["kind"] = self.kind
        root["package_version"] = __version__
        root["created_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        root["complete"] = False
        for name, value in self.attrs.items():
            root[name] = _encode_attr(value)
        self._items = self._file.create_group("items")
        return self

    def put(self, image_id: str, array: np.ndarray, **item_attrs: Any) -> None:
        array = np.ascontiguousarray(array)
        key = _key(image_id)
        if key in self._items:
            raise StoreError(f"{self.path}: image id {image_id!r} written twice")
        kwargs = {}
        if array.ndim >= 1 and array.size > 1:
            kwargs = dict(chunks=True, compression="gzip",
                          compression_opts=self.compression_level, shuffle=True)
        ds = self._items.create_dataset(key, data=array, **kwargs)
        for name, value in item_attrs.items():
            ds.attrs[name] = _encode_attr(value)

    def put_array(self, name: str, array: np.ndarray) -> None:
        """A file-level array (e.g. the confounder set) outside ``/items``."""
        self._file.create_dataset(name, data=np.asarray(array), compression="gzip",
                                  compression_opts=self.compression_level)

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._file.attrs["complete"] = True
                self._file.attrs["num_items"] = len(self._items)
            self._file.close()
        finally:
            if exc_type is None:
                os.replace(self._tmp, self.path)
            elif self._tmp.exists():
                self._tmp.unlink()


class MapReader:
    """Random access to a finished artifact by image id.

    ``expect`` maps root attribute names to required values (e.g. the class
    names or the round); any mismatch raises :class:`StoreError` naming the
    file and the attribute, so a stale or foreign file is never used silently.
    """

    def __init__(self, path: str | os.PathLike, *, kind: str | None = None,
                 expect: dict | None = None):
        self.path = Path(path)
        if not self.path.exists():
            raise StoreError(f"{self.path}: artifact file does not exist")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as err:
            raise StoreError(f"{self.path}: not a readable HDF5 file ({err})") from err
        self.attrs = {k: _decode_attr(v) for k, v in self._file.attrs.items()}
        problems = []
        if self.attrs.get("format") != FORMAT:
            problems.append(f"format is {self.attrs.get('format')!r}, expected {FORMAT!r}")
        if not self.attrs.get("complete", False):
            problems.append("file is incomplete (its writer did not finish)")
        if kind is not None and self.attrs.get("kind") != kind:
            problems.append(f"kind is {self.attrs.get('kind')!r}, expected {kind!r}")
        for name, value in (expect or {}).items():
            got = self.attrs.get(name)
            if _normalise(got) != _normalise(value):
                problems.append(f"attribute {name!r} is {got!r}, expected {value!r}")
        if problems:
            self._file.close()
            raise StoreError(f"{self.path}: " + "; ".join(problems))
        self._items = self._file["items"]

    def ids(self) -> list[str]:
        return [_unkey(k) for k in self._items.keys()]

    def __contains__(self, image_id: str) -> bool:
        return _key(image_id) in self._items

    def __len__(self) -> int:
        return len(self._items)

    def get(self, image_id: str) -> np.ndarray:
        key = _key(image_id)
        if key not in self._items:
            raise StoreError(f"{self.path}: no entry for image id {image_id!r}")
        return self._items[key][()]

    def item_attrs(self, image_id: str) -> dict:
        return {k: _decode_attr(v) for k, v in self._items[_key(image_id)].attrs.items()}

    def array(self, name: str) -> np.ndarray:
        if name not in self._file:
            raise StoreError(f"{self.path}: no file-level array {name!r}")
        return self._file[name][()]

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "MapReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ShardedReader:
    """Several shard files read as one store keyed by image id."""

    def __init__(self, paths: Iterable[str | os.PathLike], *, kind: str | None = None,
                 expect: dict | None = None):
        self.readers = [MapReader(p, kind=kind, expect=expect) for p in paths]
        if not self.readers:
            raise StoreError("no shard files given")
        self._where: dict[str, MapReader] = {}
        for reader in self.readers:
            for image_id in reader.ids():
                if image_id in self._where:
                    raise StoreError(f"image id {image_id!r} is in both {self._where[image_id].path}"
                                     f" and {reader.path}")
                self._where[image_id] = reader
        self.attrs = self.readers[0].attrs

    def ids(self) -> list[str]:
        return list(self._where)

    def __contains__(self, image_id: str) -> bool:
        return image_id in self._where

    def __len__(self) -> int:
        return len(self._where)

    def get(self, image_id: str) -> np.ndarray:
        if image_id not in self._where:
            raise StoreError(f"no shard of {[str(r.path) for r in self.readers]} has image id {image_id!r}")
        return self._where[image_id].get(image_id)

    def item_attrs(self, image_id: str) -> dict:
        return self._where[image_id].item_attrs(image_id)

    def items(self) -> Iterator[tuple[str, np.ndarray]]:
        for image_id, reader in self._where.items():
            yield image_id, reader.get(image_id)

    def close(self) -> None:
        for reader in self.readers:
            reader.close()

    def __enter__(self) -> "ShardedReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _normalise(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_normalise(v) for v in value]
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
