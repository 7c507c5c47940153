"""Encoding records for Kafka: strict JSON per record, columns to JSON rows in C (msgspec), keys.

NaN and infinities become ``null`` (strict JSON); numpy values become numbers and lists.
"""

from __future__ import annotations

import json
import math
from typing import Any, Callable, Mapping

import numpy as np

from connectors.encode import json_records


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    raise TypeError(f"value of type {type(value).__name__} is not JSON serialisable: {value!r}")


def _strict(value: Any) -> Any:
    """Replace non-finite floats by None, recursively (strict JSON has no NaN/Infinity)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.generic):
        return _strict(value.item())
    if isinstance(value, np.ndarray):
        return _strict(value.tolist())
    if isinstance(value, Mapping):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def json_encoder(record: Mapping[str, Any]) -> bytes:
    """Compact, strict UTF-8 JSON: numpy values become numbers and lists, NaN and infinities ``null``.

    >>> json_encoder({"a": np.float64(1.5), "b": np.arange(2), "c": float("nan")})
    b'{"a":1.5,"b":[0,1],"c":null}'
    """
    try:
        text = json.dumps(record, separators=(",", ":"), default=_json_default, allow_nan=False)
    except ValueError:  # a NaN or infinity somewhere
        text = json.dumps(_strict(record), separators=(",", ":"), default=_json_default, allow_nan=False)
    return text.encode("utf-8")


class ColumnEncoder:
    """Encode columns as one compact JSON object per row (:func:`connectors.encode.json_records`).

    >>> ColumnEncoder().encode({"a.b": np.array([1.5, np.nan]), "k": np.array(["x", "y"], dtype=object),
    ...                         "v": np.array([[1, 2], [3, 4]])})
    [b'{"a.b":1.5,"k":"x","v":[1,2]}', b'{"a.b":null,"k":"y","v":[3,4]}']
    """

    def encode(self, columns: Mapping[str, Any]) -> list[bytes]:
        """One JSON object (bytes) per row of ``columns``; fields in key order."""
        return json_records(columns)


def key_column(column: Any) -> list[bytes | None]:
    """Message keys from a column: str as UTF-8, bytes unchanged, None kept, anything else ``str()``."""
    values = column.tolist() if hasattr(column, "tolist") else list(column)
    types = set(map(type, values))
    if types == {str}:
        return list(map(str.encode, values))
    if types == {bytes}:
        return values
    return [None if v is None else bytes(v) if isinstance(v, (bytes, bytearray)) else str(v).encode()
            for v in values]


def _key_function(key: str | Callable[[Mapping[str, Any]], Any] | None) -> Callable[[Mapping[str, Any]], bytes | None]:
    def to_bytes(value: Any) -> bytes | None:
        if value is None:
            return None
        if isinstance(value, (bytes, bytearray)):
            return bytes(value)
        return str(value).encode("utf-8")

    if key is None:
        return lambda record: None
    if isinstance(key, str):
        field = key
        return lambda record: to_bytes(record.get(field))
    if callable(key):
        return lambda record: to_bytes(key(record))
    raise TypeError(f"key must be None, a field name or a callable(record), got {key!r}")
