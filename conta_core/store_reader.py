"""Reading artifact store files: :class:`MapReader` (one file, checked on open and per item)
and :class:`ShardedReader` (several shards as one store); the format: :mod:`conta_core.store`."""
from __future__ import annotations

import json
import os
import zlib
from pathlib import Path
from typing import Iterable, Iterator

import h5py
import numpy as np

from . import store_codec
from .integrity import discard
from .store_format import (_CHECKSUMS, _ROOT_CRC, CHECKSUM, FORMAT, DamagedStoreFile, StoreError,
                           _crc_attrs, _decode_attr, _encode_attr, _h5_reason, _key, _normalise,
                           _unjson_attr, _unkey)
from .store_v1 import FORMAT as FORMAT_V1
from .store_v1 import V1Items
from .store_v1 import crc_item as _crc_item  # the file-level arrays' checksum, as in conta-maps/1


class MapReader:
    """Random access to a finished artifact by image id.

    ``expect`` maps root attribute names to required values (e.g. the class
    names or the round); any mismatch raises :class:`StoreError` naming the
    file and the attribute, so a stale or foreign file is never used silently.

    Damage (the file is truncated or not HDF5, a checksum fails, data does not
    decompress) raises :class:`DamagedStoreFile` on open or on the read that
    meets it, after deleting the file when ``remove_damaged`` (the default: the
    workflow's readers read only rebuildable outputs), so the next run rebuilds
    it. Problems of the surroundings (permissions, locks) delete nothing.
    """

    def __init__(self, path: str | os.PathLike, *, kind: str | None = None,
                 expect: dict | None = None, remove_damaged: bool = True):
        self.path = Path(path)
        self._kind, self._expect, self._remove = kind, expect, remove_damaged
        self._file = None
        self._fd = None
        if not self.path.exists():
            raise StoreError(f"{self.path}: artifact file does not exist")
        if not self.path.is_file() or not os.access(self.path, os.R_OK):
            raise StoreError(f"{self.path}: not a readable file (check its type and permissions)")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as err:
            if "errno" in str(err):  # a system call failed (lock, I/O): not the file's content
                raise StoreError(f"{self.path}: cannot open ({err})") from err
            raise self._damaged(f"not a readable HDF5 file: {_h5_reason(err)}") from err
        try:
            self._raw_attrs = dict(self._file.attrs.items())
            self.attrs = {k: _decode_attr(v) for k, v in self._raw_attrs.items()}
        except Exception as err:  # a valid HDF5 file, ours or not, has readable attributes
            raise self._damaged(f"unreadable root attributes: {_h5_reason(err)}") from err
        self._v1 = None
        if self.attrs.get("format") not in _CHECKSUMS and _ROOT_CRC not in self.attrs:
            # Another program's file (or another format): reported, never judged damaged.
            self.close()
            raise StoreError(f"{self.path}: format is {self.attrs.get('format')!r}, expected {FORMAT!r} "
                             "(not an artifact of this workflow)")
        try:
            self._verify_root()
            if self.attrs.get("format") == FORMAT_V1:
                self._v1 = V1Items(self._file["items"], self._damaged, _key, _unkey, _crc_attrs, _decode_attr)
            else:
                self._load_index()
        except StoreError:  # damaged (the file is gone), or intact but not for this version
            raise
        except Exception as err:  # h5py raises many types for damaged metadata
            raise self._damaged(f"unreadable metadata: {_h5_reason(err)}") from err
        problems = []
        if self.attrs.get("format") not in _CHECKSUMS:
            problems.append(f"format is {self.attrs.get('format')!r}, expected {FORMAT!r}")
        if kind is not None and self.attrs.get("kind") != kind:
            problems.append(f"kind is {self.attrs.get('kind')!r}, expected {kind!r}")
        for name, value in (expect or {}).items():
            got = self.attrs.get(name)
            if _normalise(got) != _normalise(value):
                problems.append(f"attribute {name!r} is {got!r}, expected {value!r}")
        if problems:
            self.close()
            raise StoreError(f"{self.path}: " + "; ".join(problems))

    def _verify_root(self) -> None:
        if not self.attrs.get("complete", False):
            raise self._damaged("file is incomplete (its writer did not finish)")
        checksum = _CHECKSUMS.get(self.attrs.get("format"), CHECKSUM)
        if self.attrs.get("checksum") != checksum:
            raise self._damaged(f"it has no {checksum} checksums (written by an older version): "
                                "it cannot be verified")
        if self.attrs.get(_ROOT_CRC) != _crc_attrs(self._raw_attrs, (_ROOT_CRC,)):
            raise self._damaged("checksum of the root attributes does not match")
        if self.attrs.get("num_items") != len(self._file["items"]):
            raise self._damaged(f"{len(self._file['items'])} items, the file says {self.attrs.get('num_items')}")

    def _load_index(self) -> None:
        raw = self._file["index"][()].tobytes()
        if zlib.crc32(raw) != self.attrs.get("index_crc32"):
            raise self._damaged("checksum of the item index does not match")
        index = json.loads(raw)
        self._codec, self._quantize = index["codec"], index["quantize"]
        try:
            self._decoder = store_codec.Decoder(self._codec, self._quantize)
        except store_codec.CodecError as err:  # intact, but this version cannot decode it
            self.close()
            raise StoreError(f"{self.path}: {err}; written by a newer conta-core?") from err
        dtypes = {name: np.dtype(name) for name in {e[3] for e in index["items"]}}  # a few distinct ones
        # id -> (offset, nbytes, dtype, shape, crc32, attrs), in HDF5 key order
        self._entries = {e[0]: (e[1], e[2], dtypes[e[3]], tuple(e[4]), e[5], e[6]) for e in index["items"]}
        if len(self._entries) != self.attrs.get("num_items"):
            raise self._damaged(f"the index lists {len(self._entries)} items, the file says "
                                f"{self.attrs.get('num_items')}")
        self._fd = os.open(self.path, os.O_RDONLY)

    def _damaged(self, reason: str) -> DamagedStoreFile:
        if self._file is not None:
            try:
                self._file.close()
            except Exception:  # noqa: BLE001 - closing a damaged file may fail too
                pass
        self._close_fd()
        return discard(self.path, reason, remove=self._remove, error=DamagedStoreFile)

    def __reduce__(self):
        # An open h5py file cannot be pickled: a copy in another process reopens the path.
        return (_open_reader, (str(self.path), self._kind, self._expect, self._remove))

    def ids(self) -> list[str]:
        return self._v1.ids() if self._v1 is not None else list(self._entries)

    def __contains__(self, image_id: str) -> bool:
        return image_id in (self._v1 if self._v1 is not None else self._entries)

    def __len__(self) -> int:
        return len(self._v1 if self._v1 is not None else self._entries)

    def _entry(self, image_id: str) -> tuple | None:
        """The index entry of ``image_id`` (None in a conta-maps/1 file); StoreError if absent."""
        if self._v1 is not None:
            if image_id not in self._v1:
                raise StoreError(f"{self.path}: no entry for image id {image_id!r}")
            return None
        try:
            return self._entries[image_id]
        except KeyError:
            raise StoreError(f"{self.path}: no entry for image id {image_id!r}") from None

    @property
    def levels(self) -> int | None:
        """The file's quantisation: its items are integers k stored for k / levels (CAMs: 255),
        read as float32 by :meth:`get` or as the integers by :meth:`get_levels`; None if unquantised."""
        return None if self._v1 is not None else (self._quantize or None)

    def get(self, image_id: str) -> np.ndarray:
        """The image's array (float32 for a quantised file), its stored bytes checked against their CRC-32."""
        entry = self._entry(image_id)
        if entry is None:
            return self._v1.get(image_id)
        return self._decode(image_id, entry, self._decoder)

    def get_levels(self, image_id: str) -> tuple[np.ndarray, int]:
        """``(k, levels)``: a quantised item's integers as stored (uint8 for CAMs) and the file's
        levels; :meth:`get` returns ``store_codec.dequantise(k, levels)``, the same float32 to the
        bit. Cheaper than :meth:`get` (no float32 conversion, a quarter of the bytes written), and
        exact for what depends only on the values' order (thresholds, arg-max, ranks: k -> k / levels
        is strictly increasing; :mod:`conta_core.cam_labels`). StoreError if the file is unquantised."""
        if self.levels is None:
            raise StoreError(f"{self.path}: items are not quantised (format {self.attrs.get('format')!r}, "
                             f"quantize {getattr(self, '_quantize', None)!r}): read them with get()")
        return self._decode(image_id, self._entry(image_id), self._decoder.integers), self.levels

    def _decode(self, image_id: str, entry: tuple, decode) -> np.ndarray:
        offset, nbytes, dtype, shape, crc, _ = entry
        try:
            blob = os.pread(self._fd, nbytes, offset) if nbytes else b""
        except OSError as err:
            raise StoreError(f"{self.path}: cannot read item {image_id!r} ({err})") from err
        if len(blob) != nbytes:
            raise self._damaged(f"item {image_id!r} is cut short ({len(blob)} of {nbytes} bytes)")
        if store_codec.crc32(blob) != crc:
            raise self._damaged(f"item {image_id!r} fails its checksum")
        try:
            return decode(blob, dtype, shape)
        except store_codec.CodecError as err:
            if "lz4 package" in str(err):
                raise StoreError(f"{self.path}: {err}") from err
            raise self._damaged(f"item {image_id!r} does not decode: {err}") from err
        except Exception as err:  # noqa: BLE001 - a codec's own error on bytes that pass the CRC
            raise self._damaged(f"item {image_id!r} does not decode: {err}") from err

    def item_attrs(self, image_id: str) -> dict:
        """The image's attributes (covered by the index's CRC-32, checked when the file was opened)."""
        entry = self._entry(image_id)
        if entry is None:
            return self._v1.item_attrs(image_id)
        return {k: _decode_attr(_encode_attr(_unjson_attr(v))) for k, v in entry[5].items()}

    def check_layout(self) -> None:
        """Damaged unless every indexed byte range is where HDF5 keeps that item: a file whose
        items were rewritten through HDF5 elsewhere (``del`` and a new dataset) is caught here,
        not by the per-item CRCs, which see the old bytes. One HDF5 look-up per item."""
        if self._v1 is not None:
            return  # conta-maps/1 items are read through HDF5 itself
        try:
            items = self._file["items"]
            for image_id, (offset, nbytes, *_rest) in self._entries.items():
                ds = items[_key(image_id)]
                where = (ds.id.get_offset() or 0) if nbytes else 0
                if (ds.dtype, ds.shape, where) != (np.dtype(np.uint8), (nbytes,), offset):
                    raise self._damaged(f"item {image_id!r} is not where the index says")
        except DamagedStoreFile:
            raise
        except Exception as err:  # noqa: BLE001 - a missing item, unreadable metadata
            raise self._damaged(f"the item layout is unreadable: {_h5_reason(err)}") from err

    def array(self, name: str) -> np.ndarray:
        if name not in self._file:
            raise StoreError(f"{self.path}: no file-level array {name!r}")
        try:
            array = self._file[name][()]
        except Exception as err:
            raise self._damaged(f"array {name!r} is unreadable: {_h5_reason(err)}") from err
        stored = (self.attrs.get("arrays_crc32") or {}).get(name)
        if stored is None or int(stored) != _crc_item(name, np.asarray(array)):
            raise self._damaged(f"array {name!r} fails its checksum")
        return array

    def _close_fd(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:  # a reader dropped unclosed gives its descriptor back (h5py's closes itself)
        self._close_fd()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._close_fd()

    def __enter__(self) -> "MapReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ShardedReader:
    """Several shard files read as one store keyed by image id."""

    def __init__(self, paths: Iterable[str | os.PathLike], *, kind: str | None = None,
                 expect: dict | None = None, remove_damaged: bool = True):
        self._kind, self._expect, self._remove = kind, expect, remove_damaged
        self.readers = []
        try:
            for p in paths:
                self.readers.append(MapReader(p, kind=kind, expect=expect, remove_damaged=remove_damaged))
        except BaseException:
            self.close()  # the shards opened before the one that failed
            raise
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

    def __reduce__(self):
        return (_open_sharded, ([str(r.path) for r in self.readers], self._kind, self._expect, self._remove))

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

    @property
    def levels(self) -> int | None:
        """The shards' common quantisation (:attr:`MapReader.levels`); None if any differs."""
        found = {reader.levels for reader in self.readers}
        return found.pop() if len(found) == 1 else None

    def get_levels(self, image_id: str) -> tuple[np.ndarray, int]:
        if image_id not in self._where:
            raise StoreError(f"no shard of {[str(r.path) for r in self.readers]} has image id {image_id!r}")
        return self._where[image_id].get_levels(image_id)

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


def _open_reader(path: str, kind: str | None, expect: dict | None, remove_damaged: bool = True) -> MapReader:
    return MapReader(path, kind=kind, expect=expect, remove_damaged=remove_damaged)


def _open_sharded(paths: list[str], kind: str | None, expect: dict | None,
                  remove_damaged: bool = True) -> ShardedReader:
    return ShardedReader(paths, kind=kind, expect=expect, remove_damaged=remove_damaged)
