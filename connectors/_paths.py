"""Helpers shared by the file connectors: path expansion, identity hashes, argument checks."""

from __future__ import annotations

import glob as _glob
import hashlib
import os
from typing import Any, Sequence

import numpy as np


__all__: list[str] = []

HEAD_BYTES = 4096
BLOCK_BYTES = 1 << 20


def _hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _expand(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Sorted, de-duplicated list of the files matching ``paths`` (patterns are globbed)."""
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    found: set[str] = set()
    for p in items:
        p = os.fspath(p)
        if _glob.has_magic(p):
            found.update(f for f in _glob.glob(p) if os.path.isfile(f))
        elif os.path.isfile(p):
            found.add(p)
    return sorted(found)


def _check_paths(paths: Any) -> None:
    items = [paths] if isinstance(paths, (str, os.PathLike)) else paths
    if not isinstance(items, Sequence) or len(items) == 0 or not all(
        isinstance(p, (str, os.PathLike)) for p in items
    ):
        raise TypeError(f"paths must be a path, a glob pattern or a list of them, got {paths!r}")


def _check_max_records(max_records: Any) -> int:
    if isinstance(max_records, bool) or not isinstance(max_records, (int, np.integer)) or max_records < 1:
        raise ValueError(f"max_records must be a positive int, got {max_records!r}")
    return int(max_records)
