"""Writing an artifact store file: :class:`MapWriter` (the format: :mod:`conta_core.store`)."""
from __future__ import annotations

import json
import logging
import os
import time
import zlib
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from . import __version__
from . import store_codec
from .journal import JournalError, _Journal
from .store_format import (_ROOT_CRC, CHECKSUM, FORMAT, StoreError, _crc_attrs, _encode_attr, _json_attr,
                           _key, digest)
from .store_v1 import crc_item as _crc_item  # the file-level arrays' checksum, as in conta-maps/1

log = logging.getLogger("conta_core.store")  # one logger for the store, as the journal's


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
                "crc32": store_codec.crc32(blob), "attrs": {k: _json_attr(v) for k, v in item_attrs.items()}}
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
