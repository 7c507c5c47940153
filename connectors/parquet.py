"""Parquet files: :class:`ParquetSource` (needs the optional ``pyarrow``); see :mod:`connectors.files`."""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

import numpy as np

from connectors.base import Batch, ConnectorError, Position, PositionError, Reject, Source
from connectors.decoders import shorten
from connectors._paths import HEAD_BYTES, _check_max_records, _check_paths, _expand, _hash

__all__ = ["ParquetSource"]


class ParquetSource(Source):
    """Rows of Parquet files (needs the optional ``pyarrow`` dependency: ``pip install online-gmm[parquet]``).

    Parameters
    ----------
    paths : str, path or list of them
        A file, a glob pattern or a list of files/patterns; read in sorted order.
    columns : sequence of str
        Numeric columns to read, one per feature (a non-numeric or absent column raises
        :class:`ConnectorError` when its file is opened).
    missing : {"reject", "nan"}, default="reject"
        What a null does; NaN and infinite values are always rejected.
    name : str, optional
        The ``source`` field of the meta.

    Notes
    -----
    Position: ``{"path", "inode", "size", "tail", "row_group", "row", "records"}`` where ``row`` is the
    row within ``row_group`` and ``tail`` hashes the file's last bytes (its footer).  Meta of a record:
    ``{"source", "file", "row_group", "row"}`` with ``row`` the 0-based row index within the file.
    Rejected rows carry their values as a JSON object in ``Reject.raw``.
    """

    def __init__(
        self,
        paths: str | os.PathLike | Sequence[str | os.PathLike],
        *,
        columns: Sequence[str],
        missing: str = "reject",
        name: str | None = None,
        timeout: float = 1.0,
    ) -> None:
        _check_paths(paths)
        try:
            import pyarrow  # noqa: F401
            import pyarrow.parquet  # noqa: F401
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "ParquetSource needs pyarrow; install it with `pip install online-gmm[parquet]` "
                "(or `pip install pyarrow`)"
            ) from exc
        if isinstance(columns, str) or not isinstance(columns, Sequence) or not columns or not all(
            isinstance(c, str) for c in columns
        ):
            raise ValueError(f"columns must be a non-empty list of column names, got {columns!r}")
        if missing not in ("reject", "nan"):
            raise ValueError(f"missing must be one of ('reject', 'nan'), got {missing!r}")
        self.paths = paths
        self.columns = list(columns)
        self.feature_names = list(columns)
        self.missing = missing
        self.name = str(name) if name is not None else (
            os.fspath(paths) if isinstance(paths, (str, os.PathLike)) else ",".join(map(os.fspath, paths))
        )
        self.timeout = float(timeout)
        self._files = _expand(paths)
        if not self._files:
            raise ConnectorError(f"paths matched no file: {paths!r}")
        self._records = 0
        self._pf: Any = None
        self._closed = False
        self._open(0, 0, 0)

    def _identity(self, path: str) -> tuple[int, int, str]:
        st = os.stat(path)
        with open(path, "rb") as fh:
            fh.seek(max(0, st.st_size - HEAD_BYTES))
            tail = fh.read()
        return st.st_ino, st.st_size, _hash(tail)

    def _open(self, index: int, row_group: int, row: int) -> None:
        import pyarrow.parquet as pq

        self._i = index
        self._path = self._files[index]
        self._ino, self._size, self._tail = self._identity(self._path)
        try:
            self._pf = pq.ParquetFile(self._path)
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...
            raise ConnectorError(f"cannot read Parquet file {self._path!r}: {exc}") from exc
        names = self._pf.schema_arrow.names
        absent = [c for c in self.columns if c not in names]
        if absent and self.missing == "reject":
            raise ConnectorError(f"Parquet file {self._path!r} lacks columns {absent!r}; it has {names!r}")
        self._present = [c for c in self.columns if c in names]
        md = self._pf.metadata
        self._group_rows = [md.row_group(g).num_rows for g in range(md.num_row_groups)]
        if row_group > len(self._group_rows) or (
            row_group < len(self._group_rows) and row > self._group_rows[row_group]
        ) or (row_group == len(self._group_rows) and row != 0):
            raise PositionError(
                f"position row_group={row_group}, row={row} is beyond {self._path!r} "
                f"({len(self._group_rows)} row groups)"
            )
        self._rg, self._row = row_group, row
        self._X: np.ndarray | None = None

    def _load_group(self) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        table = self._pf.read_row_group(self._rg, columns=self._present)
        n = table.num_rows
        X = np.full((n, len(self.columns)), np.nan)
        nulls = np.zeros((n, len(self.columns)), dtype=bool)
        for j, c in enumerate(self.columns):
            if c not in self._present:
                nulls[:, j] = True
                continue
            col = table.column(c)
            t = col.type
            if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)):
                raise ConnectorError(
                    f"column {c!r} of {self._path!r} must be numeric, got type {t} "
                    "(booleans and strings are not numbers)"
                )
            nulls[:, j] = pc.is_null(col).to_numpy(zero_copy_only=False)
            X[:, j] = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
        self._X, self._nulls = X, nulls
        self._row_base = sum(self._group_rows[: self._rg])

    def read(self, max_records: int, timeout: float | None = None) -> Batch:
        """Next batch of at most ``max_records`` rows; see :meth:`Source.read`.

        Returns
        -------
        Batch
            ``X`` of shape (n_good, n_features); status ``"records"`` or ``"end"``.
        """
        if self._closed:
            raise ConnectorError(f"source {self.name!r} is closed")
        need = _check_max_records(max_records)
        Xs, meta, rejects = [], [], []
        n = 0
        while n < need:
            if self._rg >= len(self._group_rows):
                if self._i + 1 >= len(self._files):
                    break
                self._open(self._i + 1, 0, 0)
                continue
            if self._row >= self._group_rows[self._rg]:
                self._rg, self._row, self._X = self._rg + 1, 0, None
                continue
            if self._X is None:
                self._load_group()
            a, b = self._row, min(self._group_rows[self._rg], self._row + need - n)
            X, nulls = self._X[a:b], self._nulls[a:b]
            finite = np.isfinite(X)
            ok = (finite | nulls).all(axis=1) if self.missing == "nan" else finite.all(axis=1)
            base = self._row_base + a
            for r in np.flatnonzero(ok):
                meta.append({"source": self.name, "file": self._path, "row_group": self._rg, "row": base + int(r)})
            for r in np.flatnonzero(~ok):
                j = int(np.flatnonzero(~(finite[r] | (nulls[r] & (self.missing == "nan"))))[0])
                what = "null" if nulls[r, j] else f"not finite: {float(X[r, j])!r}"
                values = {c: (None if nulls[r, k] else float(X[r, k])) for k, c in enumerate(self.columns)}
                raw = json.dumps(values, allow_nan=True).encode()
                rejects.append(Reject(
                    f"column {self.columns[j]!r} is {what}", raw,
                    {"source": self.name, "file": self._path, "row_group": self._rg, "row": base + int(r)},
                ))
            Xs.append(X[ok].copy())
            n += b - a
            self._row = b
        self._records += n
        X = np.concatenate(Xs) if Xs else np.empty((0, len(self.columns)))
        status = "records" if n else "end"
        return Batch(X, meta, rejects, self.position(), status)

    def position(self) -> Position:
        """``{"path", "inode", "size", "tail", "row_group", "row", "records"}`` of the next row."""
        return {"path": self._path, "inode": self._ino, "size": self._size, "tail": self._tail,
                "row_group": self._rg, "row": self._row, "records": self._records}

    def seek(self, position: Position) -> None:
        """Resume exactly at ``position``; PositionError if its file vanished or was replaced."""
        keys = {"path", "inode", "size", "tail", "row_group", "row", "records"}
        if not isinstance(position, Mapping) or set(position) != keys:
            raise PositionError(f"position must be a dict with keys {sorted(keys)}, got {shorten(position, 200)}")
        self._files = _expand(self.paths)
        path = position["path"]
        if path not in self._files:
            raise PositionError(f"file {path!r} of the position does not exist any more (or is not in {self.paths!r})")
        if self._identity(path) != (position["inode"], position["size"], position["tail"]):
            raise PositionError(f"file {path!r} was replaced since the position was taken (inode, size or footer differ)")
        self._open(self._files.index(path), int(position["row_group"]), int(position["row"]))
        self._records = int(position["records"])

    def close(self) -> None:
        """Release the file; idempotent."""
        self._pf = None
        self._X = None
        self._closed = True
