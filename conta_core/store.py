"""HDF5 artifact store: the one module that reads and writes per-image maps.

Every artifact (CAMs, pseudo-masks, IR labels, predicted masks, confounder
tensors) is one HDF5 file with one dataset per image under ``/items``, chunked
and gzip-compressed, so a single image is read without touching the rest.

Writes are atomic and resumable: a writer appends each item to a journal
``<name>.partial`` (flushed per item), builds the HDF5 file as
``<name>.tmp-<pid>`` when the ``with`` block exits cleanly, sets ``complete =
True`` and renames it over the target. A killed job therefore never leaves a
file that looks finished, and its restart keeps the items already in the
journal (see :class:`MapWriter`). The root attributes record what made the
file (kind, round, step, config digest, class names, package version) so a
stale or foreign file is caught when it is opened.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import struct
import time
import zlib
from pathlib import Path
from typing import Any, Iterable, Iterator

import h5py
import numpy as np

from . import __version__

FORMAT = "conta-maps/1"

log = logging.getLogger(__name__)


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
    """Write per-image arrays into one HDF5 file, atomically and resumably.

    ``attrs`` go on the root (provenance); ``put`` adds one image's array,
    ``put_array`` a file-level array.

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
                 compression_level: int = 4, resume: bool = True):
        self.path = Path(path)
        self.kind = kind
        self.attrs = dict(attrs or {})
        self.compression_level = compression_level
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
        header = {"format": FORMAT, "kind": self.kind, "package_version": __version__, "attrs": attrs}
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
        meta = {"id": image_id, "dtype": array.dtype.str, "shape": list(array.shape),
                "attrs": {k: _json_attr(v) for k, v in item_attrs.items()}}
        # An id recovered from an earlier attempt may be put again: the newest record wins.
        self._items[image_id] = self._journal.append(b"ITEM", meta, array)
        self._this_session.add(image_id)

    def put_array(self, name: str, array: np.ndarray) -> None:
        """A file-level array (e.g. the confounder set) outside ``/items``."""
        array = np.ascontiguousarray(np.asarray(array))
        meta = {"name": name, "dtype": array.dtype.str, "shape": list(array.shape)}
        self._arrays[name] = self._journal.append(b"ARRY", meta, array)

    def _build(self) -> None:
        """The HDF5 file from the journal's newest records, written to the temp name."""
        with h5py.File(self._tmp, "w") as f:
            root = f.attrs
            root["format"] = FORMAT
            root["kind"] = self.kind
            root["package_version"] = __version__
            root["created_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            root["complete"] = False
            for name, value in self.attrs.items():
                root[name] = _encode_attr(value)
            for name, offset in self._arrays.items():
                _, array = self._journal.read(offset)
                f.create_dataset(name, data=array, compression="gzip",
                                 compression_opts=self.compression_level)
            items = f.create_group("items")
            for image_id, offset in self._items.items():
                meta, array = self._journal.read(offset)
                kwargs = {}
                if array.ndim >= 1 and array.size > 1:
                    kwargs = dict(chunks=True, compression="gzip",
                                  compression_opts=self.compression_level, shuffle=True)
                ds = items.create_dataset(_key(image_id), data=array, **kwargs)
                for name, value in meta["attrs"].items():
                    ds.attrs[name] = _encode_attr(_unjson_attr(value))
            root["complete"] = True
            root["num_items"] = len(items)

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


_MAGIC = b"CONTA-PARTIAL/1\n"
_RECORD = struct.Struct("<4sIQI")  # tag, meta bytes, payload bytes, crc32 of meta + payload


class _Journal:
    """Append-only record file behind :class:`MapWriter` (see its docstring)."""

    def __init__(self, path: Path, fd: int, writable: bool = True):
        self.path = path
        self.fd = fd
        self.file = os.fdopen(fd, "r+b" if writable else "rb", buffering=0)

    @classmethod
    def open_locked(cls, path: Path) -> "_Journal":
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.warning("%s is being written by another process; waiting for it", path)
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as err:  # a file system without flock (some Lustre mounts): go on unlocked
                log.debug("cannot lock %s (%s); writing without a lock", path, err)
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return cls(path, fd)
            os.close(fd)  # the holder finished and removed it: open the new one

    def restart(self, header: dict) -> None:
        self.file.truncate(0)
        self.file.seek(0)
        self.file.write(_MAGIC)
        self.append(b"HEAD", header, None)

    def recover(self, expected_digest: str) -> tuple[dict[str, int], dict[str, int]] | None:
        """Index the complete records; None when the journal is empty, foreign or unreadable."""
        size = os.fstat(self.fd).st_size
        if size == 0:
            return None
        self.file.seek(0)
        if self.file.read(len(_MAGIC)) != _MAGIC:
            log.warning("%s is not a journal of this format; rebuilding", self.path)
            return None
        offset = len(_MAGIC)
        first = self._record_at(offset, size)
        if first is None or first[0] != b"HEAD":
            log.warning("%s has no readable header (truncated); rebuilding", self.path)
            return None
        tag, meta, _, end = first
        if meta.get("digest") != expected_digest:
            log.warning("%s was written by a different step or configuration (%s); rebuilding",
                        self.path, {k: meta.get(k) for k in ("kind", "package_version", "attrs")})
            return None
        items, arrays = {}, {}
        offset = end
        while offset < size:
            record = self._record_at(offset, size)
            if record is None:
                log.warning("%s: dropping %d byte(s) of a torn last record", self.path, size - offset)
                self.file.truncate(offset)
                break
            tag, meta, _, end = record
            if tag == b"ITEM":
                items[meta["id"]] = offset
            elif tag == b"ARRY":
                arrays[meta["name"]] = offset
            offset = end
        self.file.seek(offset)
        return items, arrays

    def _record_at(self, offset: int, size: int, payload: bool = False):
        """``(tag, meta, payload bytes or None, end offset)``, or None for a torn/corrupt record."""
        if offset + _RECORD.size > size:
            return None
        self.file.seek(offset)
        tag, meta_len, data_len, crc = _RECORD.unpack(self.file.read(_RECORD.size))
        end = offset + _RECORD.size + meta_len + data_len
        if tag not in (b"HEAD", b"ITEM", b"ARRY") or end > size:
            return None
        body = self.file.read(meta_len + data_len)
        if len(body) != meta_len + data_len or zlib.crc32(body) != crc:
            return None
        try:
            meta = json.loads(body[:meta_len])
        except ValueError:
            return None
        return tag, meta, (body[meta_len:] if payload else None), end

    def append(self, tag: bytes, meta: dict, array: np.ndarray | None) -> int:
        meta_bytes = json.dumps(meta).encode()
        data = b"" if array is None else zlib.compress(array.tobytes(), 1)
        offset = self.file.seek(0, os.SEEK_END)
        crc = zlib.crc32(data, zlib.crc32(meta_bytes))
        # One write per record: a kill leaves at most this record torn, which recovery cuts off.
        view = memoryview(_RECORD.pack(tag, len(meta_bytes), len(data), crc) + meta_bytes + data)
        while view:
            view = view[self.file.write(view):]
        return offset

    def read(self, offset: int) -> tuple[dict, np.ndarray]:
        record = self._record_at(offset, os.fstat(self.fd).st_size, payload=True)
        if record is None:
            raise StoreError(f"{self.path}: record at byte {offset} is damaged")
        _, meta, data, _ = record
        array = np.frombuffer(zlib.decompress(data), dtype=np.dtype(meta["dtype"]))
        return meta, array.reshape(meta["shape"])

    def complete_ids(self) -> list[str]:
        """Ids of the complete item records after a valid header, in write order (read only)."""
        size = os.fstat(self.fd).st_size
        self.file.seek(0)
        if self.file.read(len(_MAGIC)) != _MAGIC:
            return []
        offset, ids = len(_MAGIC), []
        first = self._record_at(offset, size)
        if first is None or first[0] != b"HEAD":
            return []
        offset = first[3]
        while (record := self._record_at(offset, size)) is not None:
            if record[0] == b"ITEM" and record[1]["id"] not in ids:
                ids.append(record[1]["id"])
            offset = record[3]
        return ids

    def remove(self) -> None:
        try:
            if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                self.path.unlink()
        except FileNotFoundError:
            pass

    def close(self) -> None:
        self.file.close()  # also drops the flock


def partial_ids(target: str | os.PathLike) -> list[str]:
    """Image ids a restarted :class:`MapWriter` for ``target`` could keep from ``<target>.partial``.

    For diagnostics and tests; empty when there is no journal or its header is
    unreadable. Does not check that the journal matches a particular writer.
    """
    partial = Path(target).with_name(Path(target).name + ".partial")
    try:
        fd = os.open(partial, os.O_RDONLY)
    except FileNotFoundError:
        return []
    journal = _Journal(partial, fd, writable=False)
    try:
        return journal.complete_ids()
    finally:
        journal.close()


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
    """

    def __init__(self, path: str | os.PathLike, *, kind: str | None = None,
                 expect: dict | None = None):
        self.path = Path(path)
        self._kind, self._expect = kind, expect
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

    def __reduce__(self):
        # An open h5py file cannot be pickled: a copy in another process reopens the path.
        return (_open_reader, (str(self.path), self._kind, self._expect))

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
        self._kind, self._expect = kind, expect
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

    def __reduce__(self):
        return (_open_sharded, ([str(r.path) for r in self.readers], self._kind, self._expect))

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


def _open_reader(path: str, kind: str | None, expect: dict | None) -> MapReader:
    return MapReader(path, kind=kind, expect=expect)


def _open_sharded(paths: list[str], kind: str | None, expect: dict | None) -> ShardedReader:
    return ShardedReader(paths, kind=kind, expect=expect)


def _normalise(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_normalise(v) for v in value]
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
