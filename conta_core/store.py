"""HDF5 artifact store: the one module that reads and writes per-image maps.

Every artifact (CAMs, pseudo-masks, IR labels, predicted masks, confounder
tensors) is one HDF5 file with one dataset per image under ``/items``: the
item's bytes as encoded by :mod:`conta_core.store_codec` (LZ4; CAMs quantised
to uint8), a contiguous 1-D uint8 dataset. The dataset ``/index`` (JSON) lists
every item with its dtype, shape, attributes, CRC-32 and byte range in the
file, so a reader loads it once and then reads an item with one ``pread`` and
one decode, without HDF5 object look-ups (bench/store.py compares it with IRNet's
one ``.npy`` per image; numbers in bench/store.md).

Writes are atomic and resumable: a writer appends each item to a journal
``<name>.partial`` (flushed per item), builds the HDF5 file as
``<name>.tmp-<pid>`` when the ``with`` block exits cleanly, sets ``complete =
True`` and renames it over the target. A killed job therefore never leaves a
file that looks finished, and its restart keeps the items already in the
journal (see :class:`MapWriter`). The root attributes record what made the
file (kind, round, step, config digest, class names, package version) so a
stale or foreign file is caught when it is opened.

Checksums: HDF5 checks nothing by itself. Every item's stored bytes have their
CRC-32 in the index, the index has its own in the root attribute
``index_crc32`` (so ids, dtypes, shapes, attributes and byte ranges are
covered), file-level arrays have theirs in ``arrays_crc32``, and
``root_crc32`` covers the root attributes and the number of items. A reader
checks the root and the index when it opens the file and an item when it
reads it, so the cost follows what is read. ``MapReader.check_layout`` (run
by ``python -m conta_core.verify``) also checks that the index's byte ranges
are where HDF5 keeps each item. A file
found damaged (truncated, unreadable, a checksum mismatch) is deleted and
:class:`DamagedStoreFile` says so: the next run rebuilds it (see
:mod:`conta_core.integrity`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import zlib
from pathlib import Path
from typing import Any, Iterable, Iterator

import h5py
import numpy as np

from . import __version__
from . import store_codec
from .integrity import DamagedArtifact, discard
from .store_v1 import V1Items
from .store_v1 import crc_item as _crc_item  # the file-level arrays' checksum, as in conta-maps/1
from .store_v1 import FORMAT as FORMAT_V1
from .journal import JournalError, _Journal, partial_ids  # noqa: F401 (partial_ids: re-exported)

FORMAT = "conta-maps/2"

log = logging.getLogger(__name__)


CHECKSUM = "crc32/2"  # root attribute "checksum": the scheme below; absent: unverifiable file
_CHECKSUMS = {FORMAT: CHECKSUM, FORMAT_V1: "crc32/1"}  # formats still read (see store_v1)


class StoreError(RuntimeError):
    """An artifact file is missing, incomplete, foreign or stale."""


class DamagedStoreFile(StoreError, DamagedArtifact):
    """A finished artifact whose bytes are damaged (deleted unless the reader was told not to)."""


def _canonical(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "surrogateescape")
    if isinstance(value, np.ndarray):
        return {"ndarray": value.tolist(), "dtype": value.dtype.str}
    if isinstance(value, np.generic):
        return {"scalar": value.item(), "dtype": value.dtype.str}
    return value


def _crc_attrs(attrs: Any, skip: tuple[str, ...]) -> int:
    """CRC-32 of HDF5 attributes as h5py returns them (the writer reads back what it wrote)."""
    items = sorted((name, _canonical(value)) for name, value in attrs.items() if name not in skip)
    return zlib.crc32(json.dumps(items, default=repr).encode())


_ROOT_CRC = "root_crc32"


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
    """Write per-image arrays into one HDF5 file, atomically and resumably.

    ``attrs`` go on the root (provenance); ``put`` adds one image's array,
    ``put_array`` a file-level array. ``codec`` picks the item encoding
    (:data:`conta_core.store_codec.CODECS`, default LZ4); ``quantize=L`` stores
    maps in [0, 1] as integers 0..L (uint8 up to 255) and readers get float32
    back (the CAMs: 255).

    While the ``with`` block runs, every ``put`` is appended to a journal
    ``<name>.partial`` beside the target: a record per item with its length
    and CRC-32, flushed to the OS after each item, so a killed process (even
    ``kill -9``) leaves every finished item intact. The HDF5 file is built from
    the journal at a clean exit and renamed over the target; then the journal
    is deleted. A restarted writer for the same target reopens the journal,
    keeps its complete items (``image_id in writer`` tells which, so the caller
    can skip them), cuts off a torn last record, and appends. A journal that
    is unreadable, truncated inside its header, or written with a different
    kind or different provenance attributes (a foreign or stale file) is
    discarded and the shard is rebuilt from scratch. ``resume=False`` always
    starts afresh.

    The journal survives only interruptions (a kill, a signal, Ctrl-C); an
    ordinary exception in the ``with`` block deletes it, since a failing job
    is usually fixed and rerun, and its items would then be stale. A flock on
    the journal stops a second writer (e.g. an orphan of a killed run still
    finishing) from appending to it concurrently: the newcomer waits.
    """

    def __init__(self, path: str | os.PathLike, *, kind: str, attrs: dict | None = None,
                 compression_level: int = 4, resume: bool = True, codec: str | None = None,
                 quantize: int | None = None):
        self.path = Path(path)
        self.kind = kind
        self.attrs = dict(attrs or {})
        self.compression_level = compression_level  # gzip level of the file-level arrays
        self.codec = store_codec.writer_codec(codec)
        self.quantize = int(quantize) if quantize else None
        if self.quantize:
            store_codec.quantised_dtype(self.quantize)  # a bad level count fails here, not per item
        self.resume = resume
        self.partial = self.path.with_name(f"{self.path.name}.partial")
        self._tmp = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
        self._journal: _Journal | None = None
        self._items: dict[str, int] = {}    # image id -> offset of its newest record
        self._arrays: dict[str, int] = {}   # file-level array name -> offset
        self._this_session: set[str] = set()
        self.recovered = 0                  # complete items kept from an earlier attempt

    # -- journal -----------------------------------------------------------
    def _header(self) -> dict:
        attrs = {name: _json_attr(value) for name, value in self.attrs.items()}
        header = {"format": FORMAT, "kind": self.kind, "package_version": __version__, "attrs": attrs,
                  "codec": self.codec, "quantize": self.quantize}
        return {**header, "digest": digest(header)}

    def __enter__(self) -> "MapWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        header = self._header()
        self._journal = _Journal.open_locked(self.partial)
        kept = None
        if self.resume:
            kept = self._journal.recover(header["digest"])
        if kept is None:
            self._journal.restart(header)
        else:
            self._items, self._arrays = kept
            self.recovered = len(self._items)
            log.info("%s: resuming %s with %d complete item(s)", self.path, self.partial, self.recovered)
        return self

    def __contains__(self, image_id: str) -> bool:
        """True if ``image_id`` is already written (in this run or a resumed earlier one)."""
        return image_id in self._items

    def done_ids(self) -> set[str]:
        return set(self._items)

    def pending(self, ids: list[str]) -> list[str]:
        """``ids`` not yet written, in order: what a resumed shard still has to compute."""
        todo = [i for i in ids if i not in self._items]
        if len(todo) < len(ids):
            log.info("%s: %d of %d images already written", self.path, len(ids) - len(todo), len(ids))
        return todo

    def put(self, image_id: str, array: np.ndarray, **item_attrs: Any) -> None:
        if image_id in self._this_session:
            raise StoreError(f"{self.path}: image id {image_id!r} written twice")
        array = np.ascontiguousarray(array)
        if self.quantize:
            try:
                array = store_codec.quantise(array, self.quantize)
            except store_codec.CodecError as err:
                raise StoreError(f"{self.path}: item {image_id!r}: {err}") from None
        # Encoded here, once: the journal keeps the stored bytes, the build only copies them.
        blob = store_codec.encode(array, self.codec)
        meta = {"id": image_id, "dtype": array.dtype.str, "shape": list(array.shape),
                "crc32": zlib.crc32(blob), "attrs": {k: _json_attr(v) for k, v in item_attrs.items()}}
        # An id recovered from an earlier attempt may be put again: the newest record wins.
        self._items[image_id] = self._journal.append(b"ITEM", meta, blob)
        self._this_session.add(image_id)

    def put_array(self, name: str, array: np.ndarray) -> None:
        """A file-level array (e.g. the confounder set) outside ``/items``."""
        array = np.ascontiguousarray(np.asarray(array))
        meta = {"name": name, "dtype": array.dtype.str, "shape": list(array.shape)}
        self._arrays[name] = self._journal.append(b"ARRY", meta, array)

    def _build(self) -> None:
        """The HDF5 file from the journal's newest records, written to the temp name."""
        try:
            self._write_hdf5()
        except JournalError as err:
            raise StoreError(str(err)) from err

    def _write_hdf5(self) -> None:
        with h5py.File(self._tmp, "w") as f:
            root = f.attrs
            root["format"] = FORMAT
            root["kind"] = self.kind
            root["package_version"] = __version__
            root["created_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            root["complete"] = False
            for name, value in self.attrs.items():
                root[name] = _encode_attr(value)
            array_crcs = {}
            for name, offset in self._arrays.items():
                _, array = self._journal.read(offset)
                f.create_dataset(name, data=array, compression="gzip",
                                 compression_opts=self.compression_level)
                array_crcs[name] = _crc_item(name, array)
            items = f.create_group("items")
            entries = []
            # Sorted by HDF5 key, the order ids() had when it listed the group.
            for image_id in sorted(self._items, key=_key):
                meta, blob = self._journal.read(self._items[image_id])
                ds = items.create_dataset(_key(image_id), data=np.frombuffer(blob, np.uint8))
                entries.append([image_id, ds, len(blob), meta["dtype"], meta["shape"], meta["crc32"],
                                meta["attrs"]])
            index = []
            for image_id, ds, nbytes, dtype, shape, crc, attrs in entries:
                offset = ds.id.get_offset() if nbytes else 0  # contiguous: allocated when written
                if offset is None:
                    raise StoreError(f"{self.path}: HDF5 gave item {image_id!r} no storage")
                index.append([image_id, int(offset), nbytes, dtype, shape, crc, attrs])
            index_bytes = json.dumps({"codec": self.codec, "quantize": self.quantize,
                                      "items": index}).encode()
            f.create_dataset("index", data=np.frombuffer(index_bytes, np.uint8))
            root["codec"] = self.codec
            root["quantize"] = self.quantize or 0
            root["index_crc32"] = zlib.crc32(index_bytes)
            root["checksum"] = CHECKSUM
            root["arrays_crc32"] = _encode_attr(array_crcs)
            root["complete"] = True
            root["num_items"] = len(items)
            root[_ROOT_CRC] = _crc_attrs(root, (_ROOT_CRC,))

    def __exit__(self, exc_type, exc, tb) -> None:
        journal = self._journal
        try:
            if exc_type is None:
                self._build()
                os.replace(self._tmp, self.path)
                journal.remove()
            elif issubclass(exc_type, KeyboardInterrupt):
                log.warning("%s: interrupted; %s keeps %d item(s) for a restart",
                            self.path, self.partial, len(self._items))
            else:
                journal.remove()
        finally:
            self._journal = None
            journal.close()
            if self._tmp.exists():
                self._tmp.unlink()


def _json_attr(value: Any) -> Any:
    """An attribute value as JSON (numpy scalars and arrays tagged so they come back as such)."""
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": value.dtype.str}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_json_attr(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_attr(v) for k, v in value.items()}
    return value


def _unjson_attr(value: Any) -> Any:
    if isinstance(value, dict) and "__ndarray__" in value:
        return np.array(value["__ndarray__"], dtype=np.dtype(value["dtype"]))
    return value


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
        except DamagedStoreFile:
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
        # id -> (offset, nbytes, dtype, shape, crc32, attrs), in HDF5 key order
        self._entries = {e[0]: (e[1], e[2], np.dtype(e[3]), tuple(e[4]), e[5], e[6]) for e in index["items"]}
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

    def get(self, image_id: str) -> np.ndarray:
        """The image's array (float32 for a quantised file), its stored bytes checked against their CRC-32."""
        entry = self._entry(image_id)
        if entry is None:
            return self._v1.get(image_id)
        offset, nbytes, dtype, shape, crc, _ = entry
        try:
            blob = os.pread(self._fd, nbytes, offset) if nbytes else b""
        except OSError as err:
            raise StoreError(f"{self.path}: cannot read item {image_id!r} ({err})") from err
        if len(blob) != nbytes:
            raise self._damaged(f"item {image_id!r} is cut short ({len(blob)} of {nbytes} bytes)")
        if zlib.crc32(blob) != crc:
            raise self._damaged(f"item {image_id!r} fails its checksum")
        try:
            array = store_codec.decode(blob, self._codec, dtype, shape)
        except store_codec.CodecError as err:
            if "lz4 package" in str(err):
                raise StoreError(f"{self.path}: {err}") from err
            raise self._damaged(f"item {image_id!r} does not decode: {err}") from err
        except Exception as err:  # noqa: BLE001 - a codec's own error on bytes that pass the CRC
            raise self._damaged(f"item {image_id!r} does not decode: {err}") from err
        return store_codec.dequantise(array, self._quantize) if self._quantize else array

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


def _h5_reason(err: BaseException) -> str:
    """h5py's message without its wrapper: "Unable to ... (truncated file: ...)" -> "truncated file: ..."."""
    text = str(err).strip() or type(err).__name__
    if text.endswith(")") and " (" in text:
        text = text[text.index(" (") + 2:-1]
    return text


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


def _normalise(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_normalise(v) for v in value]
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
