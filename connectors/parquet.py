"""Parquet files as a source: :class:`ParquetSource` (needs the optional ``pyarrow``).

See :mod:`connectors.files` for the file sources' contract; the sink is in :mod:`connectors.parquet_sink`
and re-exported here."""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

import numpy as np

from connectors.base import (
    Batch,
    ConnectorError,
    Position,
    PositionError,
    Reject,
    Source,
    constant_column,
)
from connectors.decoders import shorten
from connectors._paths import HEAD_BYTES, _check_max_records, _check_paths, _expand, _hash

__all__ = ["ParquetSource", "ParquetSink"]

#: The meta fields every Parquet record carries, before any carried column.
_META_FIELDS = ("source", "file", "row_group", "row")


def _carry_column(col: Any) -> np.ndarray:
    """A carried Arrow column as a numpy array every sink can write (see ``ParquetSource(carry=)``)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t = col.type
    if pa.types.is_timestamp(t):
        col = pc.replace_substring(col.cast(pa.string()), " ", "T", max_replacements=1)
    elif pa.types.is_duration(t):
        col = col.cast(pa.int64())
    elif pa.types.is_temporal(t):
        col = col.cast(pa.string())
    elif pa.types.is_decimal(t):
        col = col.cast(pa.float64())
    values = col.to_numpy(zero_copy_only=False)
    if values.ndim != 1:  # pragma: no cover - to_numpy of a column is 1-D
        values = np.asarray(list(values), dtype=object)
    return values


def _concat_parts(parts: list[dict[str, Any]], carry: Sequence[str]) -> dict[str, Any]:
    """The meta columns of a read: the parts of each column concatenated (empty columns if none)."""
    if len(parts) == 1:
        return parts[0]
    if not parts:
        empty = {"source": np.empty(0, dtype=object), "file": np.empty(0, dtype=object),
                 "row_group": np.empty(0, dtype=np.int64), "row": np.empty(0, dtype=np.int64)}
        return {**empty, **{c: np.empty(0, dtype=object) for c in carry}}
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


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
    carry : sequence of str, default=()
        Columns to carry into every record's meta (an event id, a timestamp, a key), after the
        position fields.  A carried column absent from a file raises :class:`ConnectorError` naming it
        when that file is opened.  Values keep their Arrow type as numpy arrays (strings and nested
        values as object arrays, nulls as ``None``; an integer column with nulls becomes float with
        NaN), except that timestamps, dates and times become ISO-8601 strings and decimals floats, so
        that every sink can write them (``"2024-01-02T03:04:05.000006"``; a duration becomes its
        count of units).

    Notes
    -----
    Position: ``{"path", "inode", "size", "tail", "row_group", "row", "records"}`` where ``row`` is the
    row within ``row_group`` and ``tail`` hashes the file's last bytes (its footer).  Meta of a record:
    ``{"source", "file", "row_group", "row", *carry}`` with ``row`` the 0-based row index within the
    file, built as columns (:attr:`Batch.columns`).  Rejected rows carry their values as a JSON object
    in ``Reject.raw`` and the same meta (carried fields included) as a dict.
    """

    def __init__(
        self,
        paths: str | os.PathLike | Sequence[str | os.PathLike],
        *,
        columns: Sequence[str],
        missing: str = "reject",
        name: str | None = None,
        timeout: float = 1.0,
        carry: Sequence[str] = (),
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
        if isinstance(carry, str) or not isinstance(carry, Sequence) or not all(
            isinstance(c, str) for c in carry
        ):
            raise ValueError(f"carry must be a list of column names, got {carry!r}")
        clash = [c for c in carry if c in _META_FIELDS]
        if clash or len(set(carry)) != len(carry):
            raise ValueError(
                f"carry must name distinct columns other than {list(_META_FIELDS)!r}, got {list(carry)!r}")
        self.carry = list(carry)
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
        lacking = [c for c in self.carry if c not in names]
        if lacking:
            raise ConnectorError(
                f"Parquet file {self._path!r} lacks carried column(s) {lacking!r}; it has {names!r}")
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

        table = self._pf.read_row_group(self._rg, columns=list(dict.fromkeys(self._present + self.carry)))
        n = table.num_rows
        columns = []
        nulls = None  # (n, n_features) bool, only where a column has a null
        for j, c in enumerate(self.columns):
            if c not in self._present:
                nulls = np.zeros((n, len(self.columns)), dtype=bool) if nulls is None else nulls
                nulls[:, j] = True
                columns.append(np.full(n, np.nan))
                continue
            col = table.column(c)
            t = col.type
            if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)):
                raise ConnectorError(
                    f"column {c!r} of {self._path!r} must be numeric, got type {t} "
                    "(booleans and strings are not numbers)"
                )
            if col.null_count:
                nulls = np.zeros((n, len(self.columns)), dtype=bool) if nulls is None else nulls
                nulls[:, j] = pc.is_null(col).to_numpy(zero_copy_only=False)
            # a null reads as NaN (it is told apart by ``nulls``)
            columns.append(pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False))
        X = np.empty((n, len(self.columns)))
        for j, values in enumerate(columns):
            X[:, j] = values
        # rows whose values are all finite (nulls are NaN here; None: every row): clean rows need no
        # other check
        finite = np.isfinite(X)
        self._X, self._nulls, self._finite = X, nulls, None if finite.all() else finite.all(axis=1)
        self._carried = {c: _carry_column(table.column(c)) for c in self.carry}
        self._row_base = sum(self._group_rows[: self._rg])

    def read(self, max_records: int, timeout: float | None = None) -> Batch:
        """Next batch of at most ``max_records`` rows; see :meth:`Source.read`.

        A clean stretch of a row group (every value finite) is handed on as views of the row group's
        arrays: no per-row work and no copy.

        Returns
        -------
        Batch
            ``X`` of shape (n_good, n_features); status ``"records"`` or ``"end"``.
        """
        if self._closed:
            raise ConnectorError(f"source {self.name!r} is closed")
        need = _check_max_records(max_records)
        Xs: list[np.ndarray] = []
        parts: list[dict[str, Any]] = []
        rejects: list[Reject] = []
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
            X = self._X[a:b]
            base = self._row_base + a
            if self._finite is None or self._finite[a:b].all():
                good: Any = slice(None)
                k = b - a
                rows = np.arange(base, base + k, dtype=np.int64)
                Xs.append(X)
            else:
                ok = self._rows_ok(a, b)
                good = np.flatnonzero(ok)
                k = good.size
                rows = good.astype(np.int64) + base
                Xs.append(X[ok])
                self._reject(a, b, ok, base, rejects)
            part: dict[str, Any] = {
                "source": constant_column(self.name, k),
                "file": constant_column(self._path, k),
                "row_group": np.full(k, self._rg, dtype=np.int64),
                "row": rows,
            }
            for c, values in self._carried.items():
                part[c] = values[a:b][good]
            parts.append(part)
            n += b - a
            self._row = b
        self._records += n
        X = (Xs[0] if len(Xs) == 1 else np.concatenate(Xs)) if Xs else np.empty((0, len(self.columns)))
        meta = _concat_parts(parts, self.carry)
        status = "records" if n else "end"
        return Batch(X, meta, rejects, self.position(), status)

    def _rows_ok(self, a: int, b: int) -> np.ndarray:
        """Which rows ``a:b`` of the row group are good: finite, or null where ``missing="nan"``."""
        if self.missing != "nan" or self._nulls is None:
            return self._finite[a:b]
        return (np.isfinite(self._X[a:b]) | self._nulls[a:b]).all(axis=1)

    def _reject(self, a: int, b: int, ok: np.ndarray, base: int, rejects: list[Reject]) -> None:
        """Append a :class:`Reject` for each bad row of ``a:b`` (its first bad column named)."""
        X = self._X[a:b]
        nulls = self._nulls[a:b] if self._nulls is not None else np.zeros(X.shape, dtype=bool)
        finite = np.isfinite(X)
        for r in np.flatnonzero(~ok):
            j = int(np.flatnonzero(~(finite[r] | (nulls[r] & (self.missing == "nan"))))[0])
            what = "null" if nulls[r, j] else f"not finite: {float(X[r, j])!r}"
            values = {c: (None if nulls[r, k] else float(X[r, k])) for k, c in enumerate(self.columns)}
            raw = json.dumps(values, allow_nan=True).encode()
            meta = {"source": self.name, "file": self._path, "row_group": self._rg, "row": base + int(r)}
            for c, col in self._carried.items():
                value = col[a + int(r)]
                meta[c] = value.item() if isinstance(value, np.generic) else value
            rejects.append(Reject(f"column {self.columns[j]!r} is {what}", raw, meta))

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


from connectors.parquet_sink import ParquetSink  # noqa: E402  (re-exported: one module per job)
