"""Parquet files as a sink: :class:`ParquetSink`, a directory of part files (needs ``pyarrow``).

See :mod:`connectors.files` for the sinks' contract."""

from __future__ import annotations

import os
import re
from typing import Any, Mapping, Sequence

import numpy as np

from connectors._arrow import _arrow_column, _as_read_back, _castable, _unify, dictionary_columns
from connectors.base import ConnectorError, Position, PositionError, Sink, columns_from_records
from connectors.decoders import shorten

__all__ = ["ParquetSink"]


# ------------------------------------------------------------------------------------------------
# Sink

#: Part files: ``part-00000001.parquet``, ...; the name sorts in write order up to 10^8 parts.
_PART = "part-{:08d}.parquet"
_PART_RE = re.compile(r"^part-(\d{8})\.parquet$")
#: A part being written: hidden (a leading dot), so pyarrow's dataset readers skip it.
_TEMP_RE = re.compile(r"^\.part-\d{8}\.parquet\.tmp(\.old)?$")


def _sync_dir(path: str) -> None:
    """fsync a directory, so that the names created, renamed or removed in it are durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: str) -> None:
    """fsync a file's bytes."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ParquetSink(Sink):
    """Records as rows of Parquet part files in one directory, durable at every flush and resumable.

    Needs the optional ``pyarrow`` dependency (``pip install online-gmm[parquet]``).

    A Parquet file is valid only once its footer is written, so an append-only single file cannot be
    both durable at every :meth:`flush` and readable.  The sink writes a **directory of part files**
    instead: rows are buffered and written as row groups of ``row_group_size`` rows into a hidden
    temporary file ``.part-NNNNNNNN.parquet.tmp``; :meth:`flush` writes the rest as a last (smaller) row
    group, closes the file (footer), fsyncs it, renames it to ``part-NNNNNNNN.parquet`` and fsyncs the
    directory.  One flush with something new to write makes one part; a flush with nothing new makes
    none.  ``pyarrow.parquet.read_table(path)`` or ``pyarrow.dataset.dataset(path)`` reads every part
    in write order and skips the hidden temporary file.

    Parameters
    ----------
    path : str or path
        The directory (created if absent).  Parts already there are kept; new parts are numbered after
        the highest one, and their schema is the schema of the rows that follow.
    row_group_size : int, default=65536
        Rows per row group (the last row group of each part holds what remains at the flush).
    compression : str or None, default="snappy"
        Any codec pyarrow's Parquet writer accepts (``"zstd"``, ``"gzip"``, ``None``, ...).

    Notes
    -----
    Schema: every part of a directory has the same schema, so that ``read_table(path)`` reads every
    column of every part.  It is fixed when the first row group is written (a full row group or the
    first flush), from every batch buffered until then: their columns in order of first appearance,
    each typed so that all its values fit (null with T gives T, ints with floats float64).  A 1-D
    float, integer or boolean column keeps its dtype; str gives ``string``; a 2-D numeric column
    ``list<double>`` (or a list of its dtype); a :class:`DictColumn` or dicts a ``map<string, double>``
    (or of their values' type; maps, unlike structs, take other keys later, e.g. responsibilities
    after a refit changed K); a column with nothing but None so far keeps Arrow's ``null`` type.  NaN
    and infinities stay IEEE floats; None becomes null.  Later batches are put in the schema's order,
    a column they lack is null, a type is cast where nothing is lost (null into anything, integers into
    floats, lists and maps element-wise); a type that cannot be cast raises :class:`ConnectorError`
    naming the column and both types.  **Widening**: a batch that brings a column the schema lacks, or
    values for a column that was null-typed, widens the schema: every part (and the part in progress)
    is rewritten in the wider schema, one at a time through its temporary name (fsync, rename), row
    groups kept; a writer killed meanwhile leaves whole parts of either schema, and the next sink on
    the directory finishes the widening.  Widening costs a rewrite of what was written, so it is meant
    for the start of a stream (a pipeline's warm-up records lack the scores' columns).

    Position: ``{"path": directory, "parts": n}``, the number of durable parts.  :meth:`restore`
    deletes the parts numbered above ``n`` and any temporary file and drops buffered rows, so a writer
    killed at any moment (even mid-part) and restored to its last saved position continues into
    exactly the files an uninterrupted writer would have written.  A directory holds one writer at a
    time.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np, pyarrow.parquet as pq
    >>> out = os.path.join(tempfile.mkdtemp(), "scores")
    >>> sink = ParquetSink(out)
    >>> sink.write_columns({"cluster": np.array([0, 2]), "x": np.array([[0.5, 1.0], [2.0, np.nan]])})
    >>> sink.flush()
    >>> sink.position()["parts"]
    1
    >>> sink.write([{"cluster": 1, "x": [3.0, 4.0]}])
    >>> sink.close()
    >>> pq.read_table(out).to_pydict()
    {'cluster': [0, 2, 1], 'x': [[0.5, 1.0], [2.0, nan], [3.0, 4.0]]}
    """

    def __init__(self, path: str | os.PathLike, *, row_group_size: int = 65536,
                 compression: str | None = "snappy") -> None:
        try:
            import pyarrow  # noqa: F401
            import pyarrow.parquet  # noqa: F401
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "ParquetSink needs pyarrow; install it with `pip install online-gmm[parquet]` "
                "(or `pip install pyarrow`)"
            ) from exc
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or path (a directory), got {path!r}")
        if isinstance(row_group_size, bool) or not isinstance(row_group_size, (int, np.integer)) \
                or row_group_size < 1:
            raise ValueError(f"row_group_size must be a positive int, got {row_group_size!r}")
        if compression is not None and not isinstance(compression, str):
            raise ValueError(f"compression must be a codec name or None, got {compression!r}")
        self.path = os.fspath(path)
        self.row_group_size = int(row_group_size)
        self.compression = compression
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise ConnectorError(f"ParquetSink path {self.path!r} exists and is not a directory")
        if not os.path.isdir(self.path):
            os.makedirs(self.path)
            _sync_dir(os.path.dirname(os.path.abspath(self.path)))  # the new directory's entry
        self._closed = False
        self._buffer: list[Any] = []
        self._pending = 0
        self._writer: Any = None
        self._draft: dict[str, Any] = {}  # name -> type of the columns seen before the schema is fixed
        self._temps()  # a temporary part left by a killed writer is never valid: drop it
        parts = self._parts_on_disk()
        self._parts = max(parts, default=0)
        self._schema = self._schema_of_parts()

    # -------------------------------------------------------------------------------- helpers
    def _part_path(self, index: int, temp: bool = False) -> str:
        name = _PART.format(index)
        return os.path.join(self.path, "." + name + ".tmp" if temp else name)

    def _parts_on_disk(self) -> list[int]:
        return sorted(int(m.group(1)) for m in map(_PART_RE.match, os.listdir(self.path)) if m)

    def _temps(self) -> None:
        for name in os.listdir(self.path):
            if _TEMP_RE.match(name):
                os.remove(os.path.join(self.path, name))

    def _sync_dir(self) -> None:
        _sync_dir(self.path)

    def _schema_of_parts(self) -> Any:
        """The schema of the durable parts (None if none); parts left narrower by a writer killed while
        it widened the schema are widened now."""
        import pyarrow.parquet as pq

        schemas = []
        for index in range(1, self._parts + 1):
            try:
                schemas.append(pq.read_schema(self._part_path(index)).remove_metadata())
            except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...
                raise ConnectorError(f"cannot read the schema of {self._part_path(index)!r}: {exc}") from exc
        if not schemas:
            return None
        schema = schemas[-1]
        for other in schemas[:-1]:
            schema = self._wider(schema, other)
        if any(other != schema for other in schemas):
            self._schema = schema
            self._widen(schema)
        return schema

    def _wider(self, schema: Any, other: Any) -> Any:
        """``schema`` with the columns of ``other`` it lacks appended and its null-typed columns typed
        by ``other``; ConnectorError if a type of ``other`` does not fit."""
        import pyarrow as pa

        fields = {f.name: f.type for f in schema}
        for f in other:
            old = fields.get(f.name)
            if old is None or pa.types.is_null(old):
                fields[f.name] = f.type
            elif not _castable(f.type, old):
                raise ConnectorError(
                    f"column {f.name!r} of a batch for {self.path!r} has type {f.type}, but the sink's "
                    f"schema has {old}; they cannot be cast without loss")
        if list(fields.items()) == [(f.name, f.type) for f in schema]:
            return schema
        return _as_read_back(pa.schema([pa.field(k, t) for k, t in fields.items()]))

    def _rewrite(self, source: str, target: str, schema: Any, keep_open: bool = False) -> Any:
        """Write the rows of the Parquet file ``source`` into ``target`` in ``schema``, row group by row
        group (their boundaries kept); the writer is returned open with ``keep_open``."""
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(source)
        groups = [self._conform(pf.read_row_group(g), schema) for g in range(pf.metadata.num_row_groups)]
        first = groups[0] if groups else schema.empty_table()
        writer = pq.ParquetWriter(target, schema, compression=self.compression,
                                  use_dictionary=dictionary_columns(first))
        for table in groups:
            writer.write_table(table, row_group_size=self.row_group_size)
        if keep_open:
            return writer
        writer.close()
        return None

    def _widen(self, schema: Any) -> None:
        """Rewrite every durable part not yet in ``schema`` (and the part in progress) in it.

        A part is rewritten to its temporary name, fsynced and renamed over itself, so a kill leaves
        every part whole, in the old schema or the new; :meth:`_schema_of_parts` finishes the job.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            for index in range(1, self._parts + 1):
                path = self._part_path(index)
                if pq.read_schema(path).remove_metadata() == schema:
                    continue
                temp = self._part_path(index, temp=True)
                self._rewrite(path, temp, schema)
                _fsync_file(temp)
                os.replace(temp, path)
            self._sync_dir()
            if self._writer is not None:  # the part in progress: its row groups again, in the new schema
                temp = self._part_path(self._parts + 1, temp=True)
                self._writer.close()
                self._writer = None
                held = temp + ".old"
                os.replace(temp, held)
                self._writer = self._rewrite(held, temp, schema, keep_open=True)
                os.remove(held)
        except (OSError, pa.ArrowException) as exc:
            raise ConnectorError(f"cannot widen the schema of {self.path!r}: {exc}") from exc
        self._schema = schema
        self._buffer = [self._conform(t, schema) for t in self._buffer]

    def _check_open(self) -> None:
        if self._closed:
            raise ConnectorError(f"sink {self.path!r} is closed")

    def _arrow_table(self, columns: Mapping[str, Any]) -> Any:
        """The columns as an Arrow table of their own types (see :func:`_arrow_column`)."""
        import pyarrow as pa

        names = list(columns)
        arrays = [_arrow_column(k, columns[k]) for k in names]
        lengths = {len(a) for a in arrays}
        if len(lengths) > 1:
            got = {k: len(a) for k, a in zip(names, arrays)}
            raise ValueError(f"columns must have equal lengths, got {got}")
        return pa.Table.from_arrays(arrays, names=names)

    def _draft_add(self, table: Any) -> None:
        """Before the schema is fixed: unify the draft schema with a batch's columns, or raise."""
        for field in table.schema:
            old = self._draft.get(field.name)
            unified = field.type if old is None else _unify(old, field.type)
            if unified is None:
                raise ConnectorError(
                    f"column {field.name!r} of a batch for {self.path!r} has type {field.type}, but an "
                    f"earlier batch gave it type {old}; they have no common type")
            self._draft[field.name] = unified

    def _fix_schema(self) -> None:
        """Fix the schema from the buffered batches (null-only columns: float64) and conform them."""
        import pyarrow as pa

        self._schema = _as_read_back(pa.schema([pa.field(k, t) for k, t in self._draft.items()]))
        self._draft = {}
        self._buffer = [self._conform(t) for t in self._buffer]

    def _conform(self, table: Any, schema: Any = None) -> Any:
        """``table`` in ``schema`` (default: the sink's): columns in its order, absent ones null, types cast."""
        import pyarrow as pa

        schema = self._schema if schema is None else schema
        arrays = []
        for field in schema:
            i = table.schema.get_field_index(field.name)
            if i < 0:
                arrays.append(pa.nulls(table.num_rows, field.type))
                continue
            a = table.column(i)
            if a.type != field.type:
                if not _castable(a.type, field.type):
                    raise ConnectorError(
                        f"column {field.name!r} of a batch for {self.path!r} has type {a.type}, but the "
                        f"sink's schema has {field.type}; they cannot be cast without loss")
                try:
                    a = a.cast(field.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise ConnectorError(
                        f"column {field.name!r} of a batch for {self.path!r} cannot be cast from {a.type} "
                        f"to {field.type}: {exc}") from exc
            arrays.append(a)
        return pa.Table.from_arrays(arrays, schema=schema)

    def _write_groups(self, final: bool) -> None:
        """Write whole row groups from the buffer (with ``final``, the remainder too)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._schema is None:
            self._fix_schema()
        table = pa.concat_tables(self._buffer) if len(self._buffer) > 1 else self._buffer[0]
        n = self._pending if final else self._pending // self.row_group_size * self.row_group_size
        if n == 0:
            return
        try:
            if self._writer is None:  # encodings chosen from the part's first row group
                self._writer = pq.ParquetWriter(
                    self._part_path(self._parts + 1, temp=True), self._schema, compression=self.compression,
                    use_dictionary=dictionary_columns(table.slice(0, min(n, self.row_group_size))))
            self._writer.write_table(table.slice(0, n), row_group_size=self.row_group_size)
        except (OSError, pa.ArrowException) as exc:
            raise ConnectorError(f"cannot write a row group to {self.path!r}: {exc}") from exc
        rest = table.slice(n)
        self._buffer = [rest] if rest.num_rows else []
        self._pending -= n

    def _abort(self) -> None:
        """Drop buffered rows and the part being written."""
        self._buffer, self._pending = [], 0
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # noqa: BLE001 - the file is deleted just below
                pass
            self._writer = None
        self._temps()

    # -------------------------------------------------------------------------------- contract
    def write_columns(self, columns: Mapping[str, Any]) -> None:
        """Queue the rows that ``columns`` stand for; whole row groups go to the current part file.

        Parameters
        ----------
        columns : dict of str to array
            Equal-length columns of n rows: 1-D arrays, 2-D numeric arrays of shape (n, k) (a list per
            row) or :class:`DictColumn` (a struct per row); see the class notes for the schema.

        Raises
        ------
        ConnectorError
            The columns do not fit the sink's schema, or the file cannot be written.
        """
        self._check_open()
        if not columns:
            return
        table = self._arrow_table(columns)
        if table.num_rows == 0:
            return
        if self._schema is None:
            self._draft_add(table)
        else:
            wider = self._wider(self._schema, table.schema)
            if wider is not self._schema:
                self._widen(wider)
            table = self._conform(table)
        self._buffer.append(table)
        self._pending += table.num_rows
        if self._pending >= self.row_group_size:
            self._write_groups(final=False)

    def write(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Queue one row per record (fields in order of first appearance; absent fields are null)."""
        self._check_open()
        if len(records):
            self.write_columns(columns_from_records(records))

    def flush(self) -> None:
        """Close the current part (footer), fsync it, rename it into place and fsync the directory."""
        import pyarrow as pa

        self._check_open()
        if self._pending == 0 and self._writer is None:
            return
        if self._pending:
            self._write_groups(final=True)
        temp, final = self._part_path(self._parts + 1, temp=True), self._part_path(self._parts + 1)
        try:
            self._writer.close()
            self._writer = None
            _fsync_file(temp)
            os.replace(temp, final)
            self._sync_dir()
        except (OSError, pa.ArrowException) as exc:
            raise ConnectorError(f"cannot flush {final!r}: {exc}") from exc
        self._parts += 1

    def position(self) -> Position:
        """``{"path": directory, "parts": n}``: the number of parts durable as of the last :meth:`flush`."""
        return {"path": self.path, "parts": self._parts}

    def restore(self, position: Position) -> None:
        """Delete the parts written after ``position`` (and any temporary part); drop buffered rows.

        ``None`` (no position was ever saved) is a no-op.

        Raises
        ------
        PositionError
            The position is malformed, for another directory, or names parts that are missing.
        """
        self._check_open()
        if position is None:
            return
        if not isinstance(position, Mapping) or set(position) != {"path", "parts"}:
            raise PositionError(f"position must be a dict with keys ['parts', 'path'], got {shorten(position, 200)}")
        parts = position["parts"]
        if isinstance(parts, bool) or not isinstance(parts, int) or parts < 0:
            raise PositionError(f"position['parts'] must be a non-negative int, got {parts!r}")
        if not isinstance(position["path"], str) or \
                os.path.abspath(position["path"]) != os.path.abspath(self.path):
            raise PositionError(f"position is for {position['path']!r}, this sink writes {self.path!r}")
        self._abort()
        on_disk = self._parts_on_disk()
        missing = sorted(set(range(1, parts + 1)) - set(on_disk))
        if missing:
            raise PositionError(
                f"cannot restore {self.path!r} to {parts} parts: part(s) {missing[:5]!r} are missing "
                "(data was lost)")
        for index in on_disk:
            if index > parts:
                os.remove(self._part_path(index))
        self._sync_dir()
        self._parts = parts
        self._draft = {}
        self._schema = self._schema_of_parts()

    def close(self) -> None:
        """Flush (a last durable part) and close; idempotent."""
        if not self._closed:
            self.flush()
            self._closed = True

    def __repr__(self) -> str:
        return f"ParquetSink({self.path!r}, row_group_size={self.row_group_size})"
