"""File sinks: JSON Lines and CSV, append-only with fsync'd flush and truncating restore.

See :mod:`connectors.files` for the contract.
"""

from __future__ import annotations

import csv
import io
import json
import math
import operator
import os
import re
from typing import Any, Callable, Mapping, Sequence

import msgspec
import numpy as np

from connectors.base import ConnectorError, DictColumn, Position, PositionError, Sink, records_from_columns
from connectors.decoders import shorten
from connectors.encode import json_lines, json_lines_of_dicts

__all__ = ["JSONLinesSink", "CSVSink", "to_json_line"]


# ------------------------------------------------------------------------------------------------
# Sinks


def _jsonable(value: Any) -> Any:
    """``value`` with numpy types made plain and non-finite floats replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


def to_json_line(record: Mapping[str, Any]) -> bytes:
    """One record as a line of strict JSON (``\\n`` included); NaN and infinities become ``null``.

    >>> to_json_line({"score": float("nan"), "x": [1.0, float("inf")]})
    b'{"score": null, "x": [1.0, null]}\\n'
    """
    if not isinstance(record, Mapping):
        raise TypeError(f"records must be mappings, got {type(record).__name__}: {shorten(record)}")
    try:
        text = json.dumps(record, allow_nan=False, ensure_ascii=False)
    except (ValueError, TypeError):
        try:
            text = json.dumps(_jsonable(record), allow_nan=False, ensure_ascii=False)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"record is not JSON-serialisable ({exc}): {shorten(record)}") from exc
    return text.encode("utf-8") + b"\n"


class _FileSink(Sink):
    """Append-only file with fsync'd flush, durable-size position and truncating restore."""

    def __init__(self, path: str | os.PathLike) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or path, got {path!r}")
        self.path = os.fspath(path)
        parent = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(parent, exist_ok=True)
        self._fh = open(self.path, "ab")  # noqa: SIM115
        self._durable = self._fh.tell()
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise ConnectorError(f"sink {self.path!r} is closed")

    def flush(self) -> None:
        """Flush and fsync: everything written so far is durable."""
        self._check_open()
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as exc:
            raise ConnectorError(f"cannot flush {self.path!r}: {exc}") from exc
        self._durable = self._fh.tell()

    def flush_async(self) -> Callable[[], None]:
        """Write out what is buffered now and return its fsync, to run on any thread.

        :meth:`position` is at once the size written out; the returned callable makes it durable
        (on a duplicate of the file's descriptor, so that closing the sink meanwhile is safe).
        """
        self._check_open()
        try:
            self._fh.flush()
            fd = os.dup(self._fh.fileno())
        except OSError as exc:
            raise ConnectorError(f"cannot flush {self.path!r}: {exc}") from exc
        self._durable = self._fh.tell()
        path = self.path

        def sync() -> None:
            try:
                os.fsync(fd)
            except OSError as exc:
                raise ConnectorError(f"cannot flush {path!r}: {exc}") from exc
            finally:
                os.close(fd)
        return sync

    def position(self) -> Position:
        """``{"path": path, "size": durable_size}``: the size as of the last :meth:`flush`."""
        return {"path": self.path, "size": self._durable}

    def restore(self, position: Position) -> None:
        """Truncate the file back to ``position["size"]`` (discarding anything written after it).

        ``None`` (no position was ever saved) is a no-op.
        """
        self._check_open()
        if position is None:
            return
        if not isinstance(position, Mapping) or set(position) != {"path", "size"}:
            raise PositionError(f"position must be a dict with keys ['path', 'size'], got {shorten(position, 200)}")
        size = position["size"]
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise PositionError(f"position['size'] must be a non-negative int, got {size!r}")
        if os.path.abspath(position["path"]) != os.path.abspath(self.path):
            raise PositionError(f"position is for {position['path']!r}, this sink writes {self.path!r}")
        self._fh.flush()
        current = os.fstat(self._fh.fileno()).st_size
        if size > current:
            raise PositionError(
                f"cannot restore {self.path!r} to {size} bytes: it has only {current} (data was lost)"
            )
        if size == current == self._durable:
            return                      # already there and durable: no truncate, no fsync
        self._fh.truncate(size)
        self._fh.seek(0, os.SEEK_END)
        os.fsync(self._fh.fileno())
        self._durable = size

    def close(self) -> None:
        """Flush (with fsync) and close; idempotent."""
        if not self._closed:
            self.flush()
            self._fh.close()
            self._closed = True

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"


class JSONLinesSink(_FileSink):
    """Append records as JSON Lines (strict JSON: NaN/inf become ``null``).

    Parameters
    ----------
    path : str or path
        Created (with its directory) if absent; appended to otherwise.

    Examples
    --------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "out.jsonl")
    >>> with JSONLinesSink(path) as sink:
    ...     sink.write([{"score": 1.5}, {"score": float("nan")}])
    >>> open(path).read()
    '{"score":1.5}\\n{"score":null}\\n'

    Records are encoded by msgspec, a whole batch per call (:mod:`connectors.encode`); values msgspec
    cannot encode (numpy scalars in a dict, ...) take the standard library's path, record by record.
    """

    def write(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Append records (buffered until :meth:`flush`)."""
        self._check_open()
        try:
            data = json_lines_of_dicts(records)
        except (TypeError, msgspec.EncodeError):
            data = b"".join(to_json_line(r) for r in records)
        self._fh.write(data)

    def write_columns(self, columns: Mapping[str, Any]) -> None:
        """Append the records of ``columns`` (see :meth:`Sink.write_columns`), encoded in one pass."""
        self._check_open()
        try:
            data = json_lines(columns)
        except (TypeError, msgspec.EncodeError):
            data = b"".join(to_json_line(r) for r in records_from_columns(columns))
        self._fh.write(data)


class CSVSink(_FileSink):
    """Append records as CSV rows with the given fields as columns.

    Parameters
    ----------
    path : str or path
        Created if absent (a header row is written into an empty file); appended to otherwise.
    fields : sequence of str
        Column order; absent keys and None / NaN / inf values give an empty cell, other keys are ignored.
    delimiter : str, default=","

    Examples
    --------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "out.csv")
    >>> with CSVSink(path, ["id", "score"]) as sink:
    ...     sink.write([{"id": "a", "score": 0.5}, {"id": "b", "score": float("inf")}])
    >>> open(path).read()
    'id,score\\na,0.5\\nb,\\n'
    """

    def __init__(self, path: str | os.PathLike, fields: Sequence[str], *, delimiter: str = ",") -> None:
        if isinstance(fields, str) or not isinstance(fields, Sequence) or not fields or not all(
            isinstance(f, str) for f in fields
        ):
            raise ValueError(f"fields must be a non-empty list of str, got {fields!r}")
        if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in '\r\n"':
            raise ValueError(f"delimiter must be one character other than a quote or newline, got {delimiter!r}")
        self.fields = list(fields)
        self.delimiter = delimiter
        self._special: re.Pattern[str] | None = None
        super().__init__(path)
        if self._durable == 0:
            self._write_rows([self.fields])
            self.flush()

    def _write_rows(self, rows: list[list[Any]]) -> None:
        buf = io.StringIO()
        csv.writer(buf, delimiter=self.delimiter, lineterminator="\n").writerows(rows)
        self._fh.write(buf.getvalue().encode("utf-8"))

    @staticmethod
    def _cell(v: Any) -> Any:
        if isinstance(v, np.generic):
            v = v.item()
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            return ""
        if isinstance(v, (dict, list, tuple)):
            return json.dumps(_jsonable(v), allow_nan=False)
        return v

    def write(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Append records (buffered until :meth:`flush`)."""
        self._check_open()
        if self._fh.tell() == 0:  # restored to an empty file: the header goes first again
            self._write_rows([self.fields])
        self._write_rows([[self._cell(r.get(f)) for f in self.fields] for r in records])

    def write_columns(self, columns: Mapping[str, Any]) -> None:
        """Append the rows that ``columns`` stand for, formatted and quoted a column at a time.

        The output is byte for byte what :meth:`write` gives for the same records
        (``write(records_from_columns(columns))``): floats as ``repr``, ints, ``True``/``False``,
        strings quoted where the csv module quotes them, NaN / inf / None as an empty cell, lists and
        dicts as JSON.

        Parameters
        ----------
        columns : dict of str to array
            Equal-length columns of n rows: 1-D arrays, 2-D arrays of shape (n, k) (a JSON list per
            cell) or :class:`~connectors.base.DictColumn` (a JSON object per cell).  Columns not in
            ``fields`` are ignored; a field with no column gives empty cells.
        """
        self._check_open()
        if self._fh.tell() == 0:  # restored to an empty file: the header goes first again
            self._write_rows([self.fields])
        lengths = {len(c) for c in columns.values()}
        if len(lengths) > 1:
            raise ValueError(f"columns must have equal lengths, got {({k: len(c) for k, c in columns.items()})}")
        n = lengths.pop() if lengths else 0
        if n == 0:
            return
        texts = [self._texts(columns[f]) if f in columns else [""] * n for f in self.fields]
        if len(texts) == 1:  # the csv module writes a row of one empty field as ""
            one = np.array(texts[0], dtype=object)
            one[one == ""] = '""'
            texts = [one.tolist()]
        data = "\n".join(map(self.delimiter.join, zip(*texts))) + "\n"
        self._fh.write(data.encode("utf-8"))

    def _quote(self, texts: list[str]) -> list[str]:
        """``texts`` with the cells the csv module would quote quoted (QUOTE_MINIMAL, ``""`` for ``"``)."""
        if self._special is None:
            self._special = re.compile("[" + re.escape("".join(
                c for c in '"\r\n' + self.delimiter if self._csv_quotes(c))) + "]")
        mask = np.fromiter(map(bool, map(self._special.search, texts)), dtype=bool, count=len(texts))
        if not mask.any():
            return texts
        out = np.array(texts, dtype=object)
        out[mask] = list(map('"{}"'.format, map(operator.methodcaller("replace", '"', '""'), out[mask])))
        return out.tolist()

    def _csv_quotes(self, char: str) -> bool:
        """Whether the csv module quotes a cell holding ``char`` (asked once; it varies across Pythons)."""
        buf = io.StringIO()
        csv.writer(buf, delimiter=self.delimiter, lineterminator="\n").writerow(["a" + char + "b", "c"])
        return buf.getvalue().startswith('"')

    #: Characters of the text of a number or a bool: such a column needs quoting only if the
    #: delimiter is one of them.
    _PLAIN = {"f": "0123456789.-+e", "i": "0123456789-", "u": "0123456789", "b": "TrueFals"}

    def _texts(self, col: Any) -> list[str]:
        """The text of every cell of one column, quoted, as the csv module writes :meth:`_cell`'s values."""
        if isinstance(col, DictColumn):
            return self._quote(self._json_cells(col.values, col.keys))
        if not isinstance(col, np.ndarray):
            values = np.empty(len(col), dtype=object)
            values[:] = list(col)
            col = values
        if col.ndim == 2:
            return self._quote(self._json_cells(col, None))
        kind = col.dtype.kind
        if kind == "f":
            out = np.array(list(map(repr, col.tolist())), dtype=object)
            out[~np.isfinite(col)] = ""
            texts = out.tolist()
        elif kind in "iu":
            texts = list(map(str, col.tolist()))
        elif kind == "b":
            texts = np.where(col, "True", "False").tolist()
        else:
            values = col.tolist()
            if kind == "U":
                texts = values
            elif kind == "O" and set(map(type, values)) <= {str, int, bool, type(None)}:
                out = col.copy()
                out[np.equal(col, None)] = ""
                texts = list(map(str, out.tolist()))
            else:
                texts = list(map(str, map(self._cell, values)))
            return self._quote(texts)
        return texts if self.delimiter not in self._PLAIN[kind] else self._quote(texts)

    @classmethod
    def _json_cells(cls, values: np.ndarray, keys: Sequence[str] | None) -> list[str]:
        """Rows of a 2-D array as JSON lists (``keys``: JSON objects), as ``json.dumps`` writes them."""
        n, k = values.shape
        if values.dtype.kind not in "fiub" or (keys is not None and len(set(keys)) != len(keys)):
            rows = values.tolist() if keys is None else [dict(zip(keys, r)) for r in values.tolist()]
            return list(map(cls._cell, rows))
        if k == 0:
            return ["[]" if keys is None else "{}"] * n
        if values.dtype.kind == "f":
            obj = np.array(list(map(repr, values.ravel().tolist())), dtype=object).reshape(n, k)
            obj[~np.isfinite(values)] = "null"
        elif values.dtype.kind == "b":
            obj = np.where(values, "true", "false").astype(object)
        else:
            obj = np.array(list(map(str, values.ravel().tolist())), dtype=object).reshape(n, k)
        cols = [obj[:, j].tolist() for j in range(k)]
        if keys is not None:
            cols = [list(map((json.dumps(key) + ": ").__add__, c)) for key, c in zip(keys, cols)]
        inner = map(", ".join, zip(*cols))
        return list(map("[{}]".format if keys is None else "{{{}}}".format, inner))
