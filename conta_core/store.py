"""HDF5 artifact store: the one module that reads and writes per-image maps.

Every artifact (CAMs, pseudo-masks, IR labels, predicted masks, confounder
tensors) is one HDF5 file with one dataset per image under ``/items``: the
item's bytes as encoded by :mod:`conta_core.store_codec` (LZ4; CAMs quantised
to uint8), a contiguous 1-D uint8 dataset. The dataset ``/index`` (JSON) lists
every item with its dtype, shape, attributes, CRC-32 and byte range in the
file, so a reader loads it once and then reads an item with one ``pread`` and
one decode, without HDF5 object look-ups (bench/store.py compares it with IRNet's
one ``.npy`` per image; numbers in bench/store.md). ``get`` returns a quantised item as
float32, ``get_levels`` as its stored integers and the levels (no float32 conversion: what
the steps read whose work is exact on levels, see :mod:`conta_core.cam_labels`).

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

The code: :mod:`conta_core.store_format` (format names, errors, attribute
checksums), :mod:`conta_core.store_writer` (:class:`MapWriter`),
:mod:`conta_core.store_reader` (:class:`MapReader`, :class:`ShardedReader`).
Import from here: this module is the store's public face.
"""
from __future__ import annotations

from .journal import partial_ids
from .store_format import (CHECKSUM, FORMAT, DamagedStoreFile, StoreError, _crc_attrs, _decode_attr,
                           _encode_attr, _key, _unkey, digest)
from .store_reader import MapReader, ShardedReader, _open_reader, _open_sharded
from .store_v1 import FORMAT as FORMAT_V1
from .store_v1 import crc_item as _crc_item  # the file-level arrays' checksum, as in conta-maps/1
from .store_writer import MapWriter

__all__ = ["CHECKSUM", "FORMAT", "FORMAT_V1", "DamagedStoreFile", "MapReader", "MapWriter", "ShardedReader",
           "StoreError", "digest", "partial_ids", "_crc_attrs", "_crc_item", "_decode_attr", "_encode_attr",
           "_key", "_open_reader", "_open_sharded", "_unkey"]
