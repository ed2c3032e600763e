"""What every artifact store module shares: the format names, the errors, the checksums of
HDF5 attributes, and how ids and attribute values are written (see :mod:`conta_core.store`).

No HDF5 or codec work here: :mod:`conta_core.store_writer` and :mod:`conta_core.store_reader`
both import this module, and it imports neither.
"""
from __future__ import annotations

import hashlib
import json
import zlib
from typing import Any

import numpy as np

from .integrity import DamagedArtifact
from .store_v1 import FORMAT as FORMAT_V1

FORMAT = "conta-maps/2"

CHECKSUM = "crc32/2"  # root attribute "checksum": the scheme in conta_core.store; absent: unverifiable file
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


def _normalise(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_normalise(v) for v in value]
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _h5_reason(err: BaseException) -> str:
    """h5py's message without its wrapper: "Unable to ... (truncated file: ...)" -> "truncated file: ..."."""
    text = str(err).strip() or type(err).__name__
    if text.endswith(")") and " (" in text:
        text = text[text.index(" (") + 2:-1]
    return text
