"""The append-only journal behind :class:`conta_core.store.MapWriter`: ``<target>.partial``.

One record per item (tag, meta length, payload length, CRC-32 of meta + payload,
then the JSON meta and the zlib-compressed array), written in one call and
flushed, so a killed writer leaves at most its last record torn. A restarted
writer indexes the complete records after a header of the same provenance and
cuts off the torn tail. No HDF5 here: the store builds the finished file from
these records.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import struct
import zlib
from pathlib import Path

import numpy as np

log = logging.getLogger("conta_core.store")


class JournalError(RuntimeError):
    """A record of the journal cannot be read back."""


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

    def append(self, tag: bytes, meta: dict, array: np.ndarray | bytes | None) -> int:
        """A record; ``bytes`` (already encoded by the caller) are kept as they are and read back as bytes."""
        if isinstance(array, (bytes, bytearray)):
            meta, data = {**meta, "_bytes": True}, bytes(array)
        else:
            data = b"" if array is None else zlib.compress(array.tobytes(), 1)
        meta_bytes = json.dumps(meta).encode()
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
            raise JournalError(f"{self.path}: record at byte {offset} is damaged")
        _, meta, data, _ = record
        if meta.get("_bytes"):
            return meta, data
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
