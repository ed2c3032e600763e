"""Reading items of the store's first format, conta-maps/1 (written before the item index).

Each item was a natural HDF5 dataset under ``/items`` (gzip + shuffle chunks) with its
checksums as attributes: ``crc32`` (CRC-32 of the id, dtype, shape and array bytes) and
``attrs_crc32`` (of its other attributes). Results made by an older conta-core stay
readable, so an upgrade rebuilds nothing that its rules do not ask for.
"""
from __future__ import annotations

import json
import zlib
from typing import Any, Callable

import numpy as np

FORMAT = "conta-maps/1"
ITEM_CRCS = ("crc32", "attrs_crc32")


def crc_item(image_id: str, array: np.ndarray) -> int:
    head = json.dumps([image_id, array.dtype.str, list(array.shape)]).encode()
    return zlib.crc32(memoryview(np.ascontiguousarray(array)).cast("B"), zlib.crc32(head))


class V1Items:
    """``/items`` of a conta-maps/1 file: ``damaged(reason)`` makes the reader's error."""

    def __init__(self, group, damaged: Callable[[str], Exception], key: Callable[[str], str],
                 unkey: Callable[[str], str], crc_attrs: Callable, decode_attr: Callable[[Any], Any]):
        self.group, self._damaged, self._key = group, damaged, key
        self._unkey, self._crc_attrs, self._decode = unkey, crc_attrs, decode_attr

    def ids(self) -> list[str]:
        try:
            return [self._unkey(k) for k in self.group.keys()]
        except Exception as err:
            raise self._damaged(f"the item list is unreadable: {err}") from err

    def __contains__(self, image_id: str) -> bool:
        return self._key(image_id) in self.group

    def __len__(self) -> int:
        return len(self.group)

    def get(self, image_id: str) -> np.ndarray:
        try:
            dataset = self.group[self._key(image_id)]
            array = dataset[()]
            stored = dataset.attrs.get("crc32")
        except Exception as err:  # a chunk that does not decompress, a broken object header
            raise self._damaged(f"item {image_id!r} is unreadable: {err}") from err
        if stored is None or int(stored) != crc_item(image_id, np.asarray(array)):
            raise self._damaged(f"item {image_id!r} fails its checksum")
        return array

    def item_attrs(self, image_id: str) -> dict:
        try:
            attrs = dict(self.group[self._key(image_id)].attrs.items())
            stored, actual = attrs.get("attrs_crc32"), self._crc_attrs(attrs, ITEM_CRCS)
            decoded = {k: self._decode(v) for k, v in attrs.items() if k not in ITEM_CRCS}
        except Exception as err:
            raise self._damaged(f"attributes of item {image_id!r} are unreadable: {err}") from err
        if stored is None or int(stored) != actual:
            raise self._damaged(f"attributes of item {image_id!r} fail their checksum")
        return decoded
